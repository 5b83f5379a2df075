// S1MiniSpeaker: speaks text through the AudioSource on its GameObject.
//
// Threads: the engine loads and every utterance is synthesised on one worker thread per enable;
// its chunks are resampled to the output rate and queued in an AudioRingBuffer, which the audio
// thread drains in OnAudioFilterRead. Unity objects are touched on the main thread only (OnEnable,
// Update, OnDisable). OnDisable cancels the utterance in progress, drops the queued text and audio,
// and lets the worker free the engine.
using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using UnityEngine;

namespace S1Mini.Unity
{
    [RequireComponent(typeof(AudioSource))]
    [AddComponentMenu("Audio/S1Mini Speaker")]
    public sealed class S1MiniSpeaker : MonoBehaviour
    {
        [Tooltip("Bundle directory (holds manifest.json): relative to StreamingAssets, or absolute.")]
        public string bundlePath = "s1-mini";

        [Tooltip("Backend: auto, onnx-cpu, onnx-cuda, tensorrt or cuda.")]
        public string backend = "auto";

        [Tooltip("Seconds of synthesised audio queued ahead of playback; synthesis waits when full.")]
        public float bufferSeconds = 10f;

        [Tooltip("Maximum length of one utterance in frames (21.53 per second); 0 = the library default.")]
        public int maxFrames = 0;

        /// <summary>Raised on the main thread (from Update) when loading or an utterance fails.
        /// Without a handler the exception goes to Debug.LogException.</summary>
        public event Action<Exception> Failed;

        /// <summary>True once the engine has loaded (set on the worker thread).</summary>
        public bool IsLoaded { get { Session s = session; return s != null && s.Loaded; } }

        /// <summary>True while text is queued or being synthesised, or audio waits to be played.</summary>
        public bool IsSpeaking
        {
            get
            {
                Session s = session;
                return s != null && (s.Busy || s.Ring.Count > 0);
            }
        }

        private volatile Session session; // read by the audio thread
        private float[] scratch = new float[0];

        /// <summary>Queues <paramref name="text"/>; it is spoken after what is already queued.
        /// <paramref name="voice"/> (optional) must stay alive until the utterance has started.</summary>
        public void Speak(string text, Voice voice = null)
        {
            if (text == null) throw new ArgumentNullException("text");
            Session s = session;
            if (s == null) throw new InvalidOperationException("S1MiniSpeaker is disabled");
            s.Enqueue(new Utterance { Text = text, Voice = voice });
        }

        /// <summary>Stops at once: cancels the utterance in progress and drops queued text and audio.</summary>
        public void StopSpeaking()
        {
            Session s = session;
            if (s != null) s.CancelAll();
        }

        private void OnEnable()
        {
            int rate = AudioSettings.outputSampleRate;
            int capacity = Math.Max(1, (int)(Math.Max(0.1f, bufferSeconds) * rate));
            string path = Path.IsPathRooted(bundlePath) ? bundlePath : Path.Combine(Application.streamingAssetsPath, bundlePath);
            session = new Session(path, backend == "auto" ? null : backend, maxFrames, rate, new AudioRingBuffer(capacity));
            session.Start();
            AudioSource source = GetComponent<AudioSource>();
            if (source != null && !source.isPlaying) source.Play();
        }

        private void OnDisable()
        {
            Session s = session;
            session = null;
            if (s != null) s.Stop();
        }

        private void Update()
        {
            Session s = session;
            if (s == null) return;
            Exception error;
            while (s.TryTakeError(out error))
            {
                Action<Exception> handler = Failed;
                if (handler != null) handler(error);
                else Debug.LogException(error);
            }
        }

        // Audio thread: mono samples from the ring into every channel, silence when it runs dry.
        private void OnAudioFilterRead(float[] data, int channels)
        {
            Session s = session;
            if (s == null || channels <= 0) return;
            int frames = data.Length / channels;
            if (scratch.Length < frames) scratch = new float[frames];
            s.Ring.Read(scratch, 0, frames);
            for (int f = 0; f < frames; f++)
            {
                float v = scratch[f];
                for (int c = 0; c < channels; c++) data[f * channels + c] += v;
            }
        }

        private sealed class Utterance
        {
            public string Text;
            public Voice Voice;
        }

        /// One enable's worth of state; a disabled speaker's worker keeps its own until it exits.
        private sealed class Session
        {
            public readonly AudioRingBuffer Ring;
            private readonly string bundleDir;
            private readonly string backend;
            private readonly int maxFrames;
            private readonly int outputRateHz;
            private readonly object gate = new object();
            private readonly Queue<Utterance> pending = new Queue<Utterance>();
            private readonly Queue<Exception> errors = new Queue<Exception>();
            private Stream current;
            private bool stopping;
            private int generation; // bumped by CancelAll: chunks of an older generation are dropped
            private volatile bool loaded;
            private volatile bool busy;

            public Session(string bundleDir, string backend, int maxFrames, int outputRateHz, AudioRingBuffer ring)
            {
                this.bundleDir = bundleDir;
                this.backend = backend;
                this.maxFrames = maxFrames;
                this.outputRateHz = outputRateHz;
                Ring = ring;
            }

            public bool Loaded { get { return loaded; } }

            public bool Busy { get { lock (gate) return busy || pending.Count > 0; } }

            public void Start()
            {
                var thread = new Thread(Run) { IsBackground = true, Name = "S1MiniSpeaker" };
                thread.Start();
            }

            public void Enqueue(Utterance u)
            {
                lock (gate)
                {
                    pending.Enqueue(u);
                    Monitor.PulseAll(gate);
                }
            }

            public void CancelAll()
            {
                lock (gate)
                {
                    generation++;
                    pending.Clear();
                    if (current != null) current.Cancel();
                }
                Ring.Clear();
            }

            public void Stop()
            {
                lock (gate)
                {
                    stopping = true;
                    Monitor.PulseAll(gate);
                }
                CancelAll();
            }

            public bool TryTakeError(out Exception error)
            {
                lock (gate)
                {
                    error = errors.Count > 0 ? errors.Dequeue() : null;
                    return error != null;
                }
            }

            private void Report(Exception e)
            {
                lock (gate) errors.Enqueue(e);
            }

            // Worker thread: load, then speak each queued utterance until Stop().
            private void Run()
            {
                Engine engine;
                try
                {
                    engine = new Engine(bundleDir, backend);
                }
                catch (Exception e)
                {
                    Report(e);
                    return;
                }
                loaded = true;
                try
                {
                    while (true)
                    {
                        Utterance next;
                        int gen;
                        lock (gate)
                        {
                            while (pending.Count == 0 && !stopping) Monitor.Wait(gate);
                            if (stopping) return;
                            next = pending.Dequeue();
                            gen = generation;
                            busy = true;
                        }
                        try
                        {
                            Speak(engine, next, gen);
                        }
                        catch (Exception e)
                        {
                            Report(e);
                        }
                        finally
                        {
                            lock (gate) busy = false;
                        }
                    }
                }
                finally
                {
                    engine.Dispose();
                }
            }

            private void Speak(Engine engine, Utterance u, int gen)
            {
                SynthParams p = SynthParams.Default();
                if (maxFrames > 0) p.MaxFrames = (uint)maxFrames;
                Voice[] voices = u.Voice != null ? new[] { u.Voice } : new Voice[0];
                Stream stream = engine.Stream(u.Text, p, voices);
                try
                {
                    lock (gate)
                    {
                        if (gen != generation || stopping) return;
                        current = stream;
                    }
                    LinearResampler resampler = null;
                    float[] chunk;
                    while (stream.TryNext(out chunk))
                    {
                        if (resampler == null) resampler = new LinearResampler(stream.SampleRateHz, outputRateHz);
                        float[] samples = resampler.Process(chunk);
                        int written = 0;
                        while (written < samples.Length)
                        {
                            int n;
                            // Under the gate, so CancelAll's Ring.Clear never misses a chunk of its generation.
                            lock (gate)
                            {
                                if (gen != generation || stopping) return;
                                n = Ring.Write(samples, written, samples.Length - written);
                            }
                            written += n;
                            if (n == 0) Thread.Sleep(10); // the ring is full: wait for playback
                        }
                    }
                }
                finally
                {
                    // Cleared before the handle is freed, so CancelAll never cancels a freed stream.
                    lock (gate) current = null;
                    stream.Dispose();
                }
            }
        }
    }
}
