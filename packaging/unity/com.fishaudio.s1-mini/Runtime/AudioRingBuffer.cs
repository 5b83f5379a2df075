// A fixed-size ring of mono samples between a producer (the thread that pulls s1-mini chunks) and
// the audio thread (OnAudioFilterRead). Plain C#, no UnityEngine: tested under mono in
// packaging/unity/tests/RingBufferTests.cs.
using System;

namespace S1Mini.Unity
{
    /// <summary>
    /// Mono f32 samples in a ring of fixed capacity. Write never blocks and never overwrites unread
    /// samples (it returns how many fit); Read fills what is missing with silence (an underrun) and
    /// counts it; Clear drops everything queued. Safe for one writer, one reader and Clear from any
    /// thread at once: each call holds a lock for one or two array copies only.
    /// </summary>
    public sealed class AudioRingBuffer
    {
        private readonly float[] ring;
        private readonly object gate = new object();
        private int head; // next sample to read
        private int count; // samples queued
        private long underrunSamples;

        /// <param name="capacity">Samples the ring holds (e.g. 10 s at 48 kHz = 480000); at least 1.</param>
        public AudioRingBuffer(int capacity)
        {
            if (capacity < 1) throw new ArgumentOutOfRangeException("capacity", "at least 1 sample");
            ring = new float[capacity];
        }

        /// <summary>Samples the ring holds when full.</summary>
        public int Capacity { get { return ring.Length; } }

        /// <summary>Samples queued and not yet read.</summary>
        public int Count { get { lock (gate) return count; } }

        /// <summary>Samples Read had to fill with silence since the ring was made.</summary>
        public long UnderrunSamples { get { lock (gate) return underrunSamples; } }

        /// <summary>Queues up to <paramref name="length"/> samples; returns how many fit (0 when full).</summary>
        public int Write(float[] source, int offset, int length)
        {
            CheckRange(source, offset, length);
            lock (gate)
            {
                int n = Math.Min(length, ring.Length - count);
                int tail = (head + count) % ring.Length;
                int first = Math.Min(n, ring.Length - tail);
                Array.Copy(source, offset, ring, tail, first);
                Array.Copy(source, offset + first, ring, 0, n - first);
                count += n;
                return n;
            }
        }

        /// <summary>
        /// Takes up to <paramref name="length"/> queued samples into <paramref name="destination"/>
        /// and writes silence (0) after them; returns how many were real samples.
        /// </summary>
        public int Read(float[] destination, int offset, int length)
        {
            CheckRange(destination, offset, length);
            lock (gate)
            {
                int n = Math.Min(length, count);
                int first = Math.Min(n, ring.Length - head);
                Array.Copy(ring, head, destination, offset, first);
                Array.Copy(ring, 0, destination, offset + first, n - first);
                head = (head + n) % ring.Length;
                count -= n;
                if (n < length)
                {
                    Array.Clear(destination, offset + n, length - n);
                    underrunSamples += length - n;
                }
                return n;
            }
        }

        /// <summary>Drops every queued sample (a cancelled utterance stops at once).</summary>
        public void Clear()
        {
            lock (gate)
            {
                head = 0;
                count = 0;
            }
        }

        private static void CheckRange(float[] array, int offset, int length)
        {
            if (array == null) throw new ArgumentNullException("array");
            if (offset < 0 || length < 0 || offset > array.Length - length)
                throw new ArgumentOutOfRangeException("offset", "offset and length must lie inside the array");
        }
    }

    /// <summary>
    /// Linear-interpolation sample-rate converter for one stream of mono chunks (s1-mini's 44.1 kHz
    /// to the output rate of the audio device). Keeps its phase and last sample across chunks, so
    /// chunk boundaries make no clicks. Not thread-safe: one producer uses it.
    /// </summary>
    public sealed class LinearResampler
    {
        private readonly double step; // input samples per output sample
        private double position; // of the next output sample, relative to `previous` (index -1)
        private float previous;
        private bool started;

        public LinearResampler(int inputRateHz, int outputRateHz)
        {
            if (inputRateHz <= 0 || outputRateHz <= 0)
                throw new ArgumentOutOfRangeException("inputRateHz", "sample rates must be positive");
            step = (double)inputRateHz / outputRateHz;
        }

        /// <summary>Converts one chunk; the output length varies by one sample from chunk to chunk.</summary>
        public float[] Process(float[] input)
        {
            if (input == null) throw new ArgumentNullException("input");
            if (input.Length == 0) return new float[0];
            if (!started)
            {
                // The first output sample is the first input sample.
                previous = input[0];
                position = 1.0;
                started = true;
            }
            var output = new System.Collections.Generic.List<float>((int)(input.Length / step) + 2);
            // position p in [0, input.Length]: between previous (p = 0) and input[0] (p = 1), etc.
            while (position <= input.Length)
            {
                int i = (int)Math.Floor(position);
                double frac = position - i;
                float a = i == 0 ? previous : input[i - 1];
                float b = i < input.Length ? input[i] : a;
                output.Add((float)(a + (b - a) * frac));
                position += step;
            }
            position -= input.Length;
            previous = input[input.Length - 1];
            return output.ToArray();
        }

        /// <summary>Forgets the previous chunk (a new utterance).</summary>
        public void Reset()
        {
            started = false;
            position = 0;
            previous = 0;
        }
    }
}
