// Tests of the C# binding, compiled with mcs and run with mono by scripts/test-bindings.sh.
// Without a bundle: error paths (status + message), NULL and freed handles. With a bundle
// directory as the first argument: synthesize, pull and push streaming, cancel.
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Threading;
using S1Mini;

static class BindingTests
{
    static int passes, failures;

    static void Check(bool cond, string what)
    {
        if (cond) { passes++; return; }
        failures++;
        Console.Error.WriteLine("FAIL " + what);
    }

    static S1Exception Catch(Action action)
    {
        try { action(); }
        catch (S1Exception e) { return e; }
        return null;
    }

    static void CsharpMissingBundleThrowsBundleNotFound()
    {
        S1Exception e = Catch(() => new Engine("/nonexistent/bundle").Dispose());
        Check(e != null, "missing bundle throws");
        if (e == null) return;
        Check(e.Status == 100, "status is BUNDLE_NOT_FOUND (100), got " + e.Status);
        Check(e.StatusName == "S1_STATUS_BUNDLE_NOT_FOUND", "status name, got " + e.StatusName);
        Check(e.Message.Contains("/nonexistent/bundle"), "message names the path: " + e.Message);
    }

    static void CsharpUnknownBackendThrowsInvalidArgument()
    {
        S1Exception e = Catch(() => new Engine("/nonexistent/bundle", "warp-drive").Dispose());
        Check(e != null && e.StatusName == "S1_STATUS_INVALID_ARGUMENT", "unknown backend");
    }

    static void CsharpNullAndFreedHandlesAreErrorsNotCrashes()
    {
        IntPtr audio;
        int st = Native.s1_synthesize_raw(IntPtr.Zero, Native.Utf8("hi"), IntPtr.Zero, out audio);
        Check(S1.StatusName(st) == "S1_STATUS_NULL_POINTER", "NULL engine, got " + S1.StatusName(st));
        Check(Native.LastError().Length > 0, "NULL engine has a message");
        st = Native.s1_engine_free(new IntPtr(0x1234));
        Check(S1.StatusName(st) == "S1_STATUS_INVALID_HANDLE", "never-issued engine handle");
        st = Native.s1_audio_free(new IntPtr(0x1234));
        Check(S1.StatusName(st) == "S1_STATUS_INVALID_HANDLE", "never-issued audio pointer");
        Check(Native.s1_stream_free(IntPtr.Zero) == 0, "free(NULL) is a no-op");
    }

    static void CsharpDefaultsComeFromTheLibrary()
    {
        SynthParams p = SynthParams.Default();
        Check(p.StructSize == (uint)Marshal.SizeOf(typeof(SynthParams)), "struct_size matches layout");
        Native.EngineConfig c;
        Check(Native.s1_engine_config_default(out c) == 0, "engine config default");
        Check(c.struct_size == (uint)Marshal.SizeOf(typeof(Native.EngineConfig)),
            "engine config struct_size matches the C# layout");
        Check(c.graph_optimization == 3 && c.tensorrt_precision == 0 && c.tensorrt_profile_opt_tokens == 256,
            "engine config GPU defaults");
        Check(p.Temperature > 0 && p.MaxFrames > 0, "defaults filled");
        Check(S1.Version.Split('.').Length == 3, "version " + S1.Version);
        Check(S1.BackendsAvailable() != null, "backends list");
    }

    static void CsharpWithBundle(string bundle)
    {
        int logLines = 0;
        S1.SetLogCallback((level, message) => Interlocked.Increment(ref logLines));
        using (Engine engine = new Engine(bundle, "onnx-cpu"))
        {
            SynthParams p = SynthParams.Default();
            p.MaxFrames = 24;
            p.FirstChunkFrames = 2;
            p.ChunkFrames = 4;

            Audio audio = engine.Synthesize("Hello from C#.", p);
            Check(audio.SampleRateHz == 44100, "sample rate " + audio.SampleRateHz);
            Check(audio.Samples.Length > 0, "samples");
            Console.WriteLine("synthesize: " + audio.Samples.Length + " samples");

            S1Exception empty = Catch(() => engine.Synthesize("", p));
            Check(empty != null && empty.StatusName == "S1_STATUS_EMPTY_TEXT", "empty text");

            // Pull: IEnumerable<float[]>.
            int chunks = 0, total = 0;
            using (S1Mini.Stream s = engine.Stream("Hello from C#.", p))
            {
                foreach (float[] chunk in s) { chunks++; total += chunk.Length; }
                Check(s.SampleRateHz == 44100, "stream sample rate");
            }
            Check(chunks > 0 && total > 0, "pulled chunks");
            Console.WriteLine("pull stream: " + chunks + " chunks, " + total + " samples");

            // Push: events through the static trampoline, cancelled from a handler.
            using (S1Mini.Stream s = engine.Stream("Hello from C#.", p))
            {
                int events = 0;
                s.ChunkReady += pcm => { events++; s.Cancel(); };
                bool finished = s.Run();
                Check(!finished && events == 1, "push cancelled after one chunk (events " + events + ")");
            }
            using (S1Mini.Stream s = engine.Stream("Hello from C#.", p))
            {
                int events = 0;
                s.ChunkReady += pcm => events++;
                Check(s.Run() && events > 0, "push to the end");
            }

            // A handler that throws: the stream is cancelled and Run() surfaces the exception
            // (nothing unwinds through the C library).
            using (S1Mini.Stream s = engine.Stream("Hello from C#.", p))
            {
                int events = 0;
                s.ChunkReady += pcm => { events++; throw new ApplicationException("boom"); };
                Exception caught = null;
                try { s.Run(); } catch (InvalidOperationException e) { caught = e; }
                Check(caught != null && caught.InnerException is ApplicationException
                      && caught.InnerException.Message == "boom" && events == 1,
                      "a throwing ChunkReady handler cancels and surfaces from Run()");
            }

            // Cancel from another thread, then pull: enumeration ends at once.
            using (S1Mini.Stream s = engine.Stream("Hello from C#.", p))
            {
                Thread t = new Thread(() => s.Cancel());
                t.Start();
                t.Join();
                float[] chunk;
                Check(!s.TryNext(out chunk), "cancelled stream yields nothing");
            }

            // Voices: stereo PCM at 22.05 kHz -> voice -> file -> voice -> synthesis in it.
            float[] stereo = new float[2 * 22050];
            for (int i = 0; i < 22050; i++)
            {
                float x = 0.3f * ((i % 100) - 50) / 50.0f;
                stereo[2 * i] = x;
                stereo[2 * i + 1] = -x;
            }
            string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "s1mini-cs-voice.s1v");
            using (Voice v = engine.CreateVoice(stereo, 2, 22050, "A reference."))
            {
                Check(v.Frames == 22, "voice frames " + v.Frames);
                v.Save(path);
            }
            using (Voice loaded = Voice.Load(path))
            {
                SynthParams vp = SynthParams.Default();
                vp.MaxFrames = 6;
                Audio a = engine.Synthesize("In that voice.", vp, loaded);
                vp.PrefixCache = 0;
                Audio b = engine.Synthesize("In that voice.", vp, loaded);
                Check(a.Samples.Length > 0 && a.Samples.Length == b.Samples.Length, "voice synthesis");
                bool same = true;
                for (int i = 0; i < a.Samples.Length; i++) same &= a.Samples[i] == b.Samples[i];
                Check(same, "prefix cache changes nothing");
            }
            System.IO.File.WriteAllBytes(path, new byte[] { 0x53, 0x31, 0x56 });
            S1Exception bad = null;
            try { Voice.Load(path); } catch (S1Exception e) { bad = e; }
            Check(bad != null && bad.StatusName == "S1_STATUS_VOICE_INVALID", "truncated voice file");
            System.IO.File.Delete(path);
            S1Exception noSamples = null;
            try { engine.CreateVoice(new float[0], 1, 44100, "x"); } catch (S1Exception e) { noSamples = e; }
            Check(noSamples != null && noSamples.Message.Contains("no samples"), "empty reference audio");
        }
        S1.SetLogCallback(null);
        Console.WriteLine("log lines: " + logLines);
    }

    static int Main(string[] args)
    {
        CsharpMissingBundleThrowsBundleNotFound();
        CsharpUnknownBackendThrowsInvalidArgument();
        CsharpNullAndFreedHandlesAreErrorsNotCrashes();
        CsharpDefaultsComeFromTheLibrary();
        if (args.Length > 0) CsharpWithBundle(args[0]);
        else Console.WriteLine("skipped: bundle tests (no bundle directory given)");
        Console.WriteLine("csharp_binding: " + passes + " passed, " + failures + " failed");
        return failures == 0 ? 0 : 1;
    }
}
