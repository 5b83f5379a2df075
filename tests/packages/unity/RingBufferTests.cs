// Tests of AudioRingBuffer and LinearResampler (packaging/unity/.../Runtime/AudioRingBuffer.cs),
// plain C# under mono: wraparound, a full ring, underrun gives silence, Clear drops queued audio.
using System;
using S1Mini.Unity;

static class RingBufferTests
{
    static int failures;

    static void Check(bool ok, string what)
    {
        Console.WriteLine((ok ? "ok   " : "FAIL ") + what);
        if (!ok) failures++;
    }

    static float[] Seq(int from, int n)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = from + i;
        return a;
    }

    static bool Equal(float[] a, int offset, float[] b)
    {
        for (int i = 0; i < b.Length; i++) if (a[offset + i] != b[i]) return false;
        return true;
    }

    static void ring_wraparound_keeps_order()
    {
        var r = new AudioRingBuffer(8);
        Check(r.Write(Seq(1, 6), 0, 6) == 6, "ring_wraparound_keeps_order: first write fits");
        var out4 = new float[4];
        Check(r.Read(out4, 0, 4) == 4 && Equal(out4, 0, Seq(1, 4)), "ring_wraparound_keeps_order: first read");
        Check(r.Write(Seq(7, 6), 0, 6) == 6, "ring_wraparound_keeps_order: write across the end");
        var out8 = new float[8];
        Check(r.Read(out8, 0, 8) == 8 && Equal(out8, 0, Seq(5, 8)), "ring_wraparound_keeps_order: read across the end");
        Check(r.Count == 0 && r.UnderrunSamples == 0, "ring_wraparound_keeps_order: empty, no underrun");
    }

    static void ring_full_write_takes_what_fits()
    {
        var r = new AudioRingBuffer(5);
        Check(r.Write(Seq(0, 7), 0, 7) == 5, "ring_full_write_takes_what_fits: 5 of 7");
        Check(r.Write(Seq(0, 1), 0, 1) == 0, "ring_full_write_takes_what_fits: 0 when full");
        Check(r.Write(Seq(0, 4), 2, 2) == 0, "ring_full_write_takes_what_fits: offset write when full");
        var out5 = new float[5];
        r.Read(out5, 0, 5);
        Check(Equal(out5, 0, Seq(0, 5)), "ring_full_write_takes_what_fits: unread samples never overwritten");
    }

    static void ring_underrun_gives_silence()
    {
        var r = new AudioRingBuffer(16);
        r.Write(new float[] { 0.5f, -0.5f }, 0, 2);
        var out6 = new float[] { 9, 9, 9, 9, 9, 9 };
        int n = r.Read(out6, 1, 5);
        Check(n == 2, "ring_underrun_gives_silence: returns the real samples");
        Check(out6[0] == 9 && out6[1] == 0.5f && out6[2] == -0.5f && out6[3] == 0 && out6[4] == 0 && out6[5] == 0,
            "ring_underrun_gives_silence: the rest is 0, outside the range untouched");
        Check(r.UnderrunSamples == 3, "ring_underrun_gives_silence: 3 samples counted");
    }

    static void ring_clear_drops_queued_audio()
    {
        var r = new AudioRingBuffer(8);
        r.Write(Seq(1, 5), 0, 5);
        var two = new float[2];
        r.Read(two, 0, 2);
        r.Clear();
        Check(r.Count == 0, "ring_clear_drops_queued_audio: empty");
        var out4 = new float[] { 9, 9, 9, 9 };
        Check(r.Read(out4, 0, 4) == 0 && Equal(out4, 0, new float[4]), "ring_clear_drops_queued_audio: silence after");
        Check(r.Write(Seq(20, 8), 0, 8) == 8, "ring_clear_drops_queued_audio: whole capacity free again");
        var out8 = new float[8];
        r.Read(out8, 0, 8);
        Check(Equal(out8, 0, Seq(20, 8)), "ring_clear_drops_queued_audio: new audio intact");
    }

    static void ring_bad_arguments_throw()
    {
        var r = new AudioRingBuffer(4);
        bool threw = false;
        try { r.Write(new float[2], 1, 2); } catch (ArgumentOutOfRangeException) { threw = true; }
        Check(threw, "ring_bad_arguments_throw: range past the array");
        threw = false;
        try { new AudioRingBuffer(0); } catch (ArgumentOutOfRangeException) { threw = true; }
        Check(threw, "ring_bad_arguments_throw: zero capacity");
    }

    static void resampler_keeps_length_and_constant_signal()
    {
        var rs = new LinearResampler(44100, 48000);
        int total = 0;
        bool constant = true;
        for (int c = 0; c < 10; c++)
        {
            float[] chunk = new float[4410];
            for (int i = 0; i < chunk.Length; i++) chunk[i] = 0.25f;
            float[] o = rs.Process(chunk);
            total += o.Length;
            foreach (float v in o) if (Math.Abs(v - 0.25f) > 1e-6) constant = false;
        }
        Check(Math.Abs(total - 48000) <= 1, "resampler_keeps_length_and_constant_signal: 1 s in, 48000 +- 1 out (" + total + ")");
        Check(constant, "resampler_keeps_length_and_constant_signal: a constant stays constant");
    }

    static void resampler_is_continuous_across_chunks()
    {
        // A ramp split into odd chunks must come out as a ramp: no jump at the boundaries.
        var rs = new LinearResampler(3, 2);
        var all = new System.Collections.Generic.List<float>();
        int next = 0;
        foreach (int len in new[] { 5, 1, 7, 3 })
        {
            all.AddRange(rs.Process(Seq(next, len)));
            next += len;
        }
        bool ramp = true;
        for (int i = 0; i < all.Count; i++) if (Math.Abs(all[i] - i * 1.5f) > 1e-4) ramp = false;
        Check(ramp && all.Count == 11, "resampler_is_continuous_across_chunks: 16 in at 3:2 -> 11 samples on the ramp (" + all.Count + ")");
        var same = new LinearResampler(44100, 44100);
        float[] o2 = same.Process(Seq(0, 10));
        Check(o2.Length == 10 && Equal(o2, 0, Seq(0, 10)), "resampler_is_continuous_across_chunks: equal rates copy");
    }

    static int Main()
    {
        ring_wraparound_keeps_order();
        ring_full_write_takes_what_fits();
        ring_underrun_gives_silence();
        ring_clear_drops_queued_audio();
        ring_bad_arguments_throw();
        resampler_keeps_length_and_constant_signal();
        resampler_is_continuous_across_chunks();
        Console.WriteLine(failures == 0 ? "ring buffer tests: all passed" : "ring buffer tests: " + failures + " failed");
        return failures == 0 ? 0 : 1;
    }
}
