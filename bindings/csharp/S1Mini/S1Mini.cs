// s1-mini for C#: SafeHandle owners and thin classes over Native (ownership and conversion only).
// Works on .NET, Mono and Unity (Mono and IL2CPP): callbacks from native code are static methods
// marked [MonoPInvokeCallback] that find their object through a GCHandle passed as user_data.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Threading;

#if !UNITY_5_3_OR_NEWER
namespace AOT
{
    /// <summary>Unity's marker for native-callable static methods (IL2CPP needs it); defined here
    /// so the same sources build on .NET and Mono, where it does nothing.</summary>
    [AttributeUsage(AttributeTargets.Method)]
    internal sealed class MonoPInvokeCallbackAttribute : Attribute
    {
        public MonoPInvokeCallbackAttribute(Type type) { }
    }
}
#endif

namespace S1Mini
{
    /// <summary>A failed s1-mini call: the status code (S1_STATUS_*) and the library's message.</summary>
    public class S1Exception : Exception
    {
        public int Status { get; private set; }
        public string StatusName { get; private set; }

        public S1Exception(int status, string message)
            : base(Native.FromUtf8(Native.s1_status_name(status)) + ": " + message)
        {
            Status = status;
            StatusName = Native.FromUtf8(Native.s1_status_name(status));
        }
    }

    /// <summary>Owns an s1_engine; released by s1_engine_free.</summary>
    public sealed class EngineHandle : SafeHandle
    {
        public EngineHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle() { return Native.s1_engine_free(handle) == Native.StatusOk; }
    }

    /// <summary>Owns an s1_stream; released by s1_stream_free.</summary>
    public sealed class StreamHandle : SafeHandle
    {
        public StreamHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle() { return Native.s1_stream_free(handle) == Native.StatusOk; }
    }

    /// <summary>Owns an s1_voice; released by s1_voice_free.</summary>
    public sealed class VoiceHandle : SafeHandle
    {
        public VoiceHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle() { return Native.s1_voice_free(handle) == Native.StatusOk; }
    }

    /// <summary>A reference voice (codes + transcript of a recording) for voice cloning. Immutable;
    /// share it between threads. Made by Engine.CreateVoice or Voice.Load.</summary>
    public sealed class Voice : IDisposable
    {
        internal readonly VoiceHandle Handle;
        internal Voice(VoiceHandle handle) { Handle = handle; }

        /// <summary>Loads a voice file (S1_STATUS_VOICE_INVALID when truncated or corrupt).</summary>
        public static Voice Load(string path)
        {
            VoiceHandle h;
            Native.Check(Native.s1_voice_load(Native.Utf8(path), out h));
            return new Voice(h);
        }

        /// <summary>Writes the voice file (docs/voice-format.md).</summary>
        public void Save(string path) { Native.Check(Native.s1_voice_save(Handle, Native.Utf8(path))); }

        /// <summary>Codec frames of the reference (21.53 per second).</summary>
        public long Frames
        {
            get
            {
                UIntPtr n;
                Native.Check(Native.s1_voice_frames(Handle, out n));
                return (long)n.ToUInt64();
            }
        }

        public void Dispose() { Handle.Dispose(); }
    }

    /// <summary>Keeps voice handles alive and pinned for one native call.</summary>
    internal sealed class VoiceList : IDisposable
    {
        private readonly Voice[] voices;
        private readonly bool[] added;
        private GCHandle pin;

        internal VoiceList(Voice[] voices, ref SynthParams p)
        {
            this.voices = voices ?? new Voice[0];
            added = new bool[this.voices.Length];
            IntPtr[] raw = new IntPtr[this.voices.Length];
            for (int i = 0; i < this.voices.Length; i++)
            {
                this.voices[i].Handle.DangerousAddRef(ref added[i]);
                raw[i] = this.voices[i].Handle.DangerousGetHandle();
            }
            if (raw.Length > 0)
            {
                pin = GCHandle.Alloc(raw, GCHandleType.Pinned);
                p.Voices = pin.AddrOfPinnedObject();
            }
            else
            {
                p.Voices = IntPtr.Zero;
            }
            p.NVoices = new UIntPtr((uint)raw.Length);
        }

        public void Dispose()
        {
            if (pin.IsAllocated) pin.Free();
            for (int i = 0; i < voices.Length; i++)
                if (added[i]) voices[i].Handle.DangerousRelease();
        }
    }

    /// <summary>Owns an s1_audio; released by s1_audio_free.</summary>
    public sealed class AudioHandle : SafeHandle
    {
        public AudioHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle() { return Native.s1_audio_free(handle) == Native.StatusOk; }
        internal IntPtr Raw { get { return handle; } }
    }

    /// <summary>PCM copied out of the library: f32 mono, nominal range [-1, 1].</summary>
    public sealed class Audio
    {
        public float[] Samples { get; private set; }
        public int SampleRateHz { get; private set; }

        public Audio(float[] samples, int sampleRateHz)
        {
            Samples = samples;
            SampleRateHz = sampleRateHz;
        }
    }

    /// <summary>Library-wide queries and settings.</summary>
    public static class S1
    {
        /// <summary>Library version, "MAJOR.MINOR.PATCH".</summary>
        public static string Version { get { return Native.FromUtf8(Native.s1_version()); } }

        /// <summary>Backends usable on this machine, in the order backend "auto" tries them.</summary>
        public static string[] BackendsAvailable()
        {
            UIntPtr len;
            int st = Native.s1_backends_available(null, UIntPtr.Zero, out len);
            if (st != Native.StatusOk && st != Native.StatusBufferTooSmall) Native.Check(st);
            byte[] buf = new byte[(int)len.ToUInt64() + 1];
            Native.Check(Native.s1_backends_available(buf, (UIntPtr)buf.Length, out len));
            string all = System.Text.Encoding.UTF8.GetString(buf, 0, (int)len.ToUInt64());
            return all.Length == 0 ? new string[0] : all.Split(',');
        }

        /// <summary>The C name of a status code, e.g. "S1_STATUS_BUNDLE_INVALID".</summary>
        public static string StatusName(int status) { return Native.FromUtf8(Native.s1_status_name(status)); }

        // The delegate handed to native code must stay reachable for as long as native code may
        // call it: a static field, never a lambda or an instance method (IL2CPP cannot call those).
        private static readonly Native.LogCallback LogTrampoline = OnLog;
        private static readonly object LogLock = new object();
        private static GCHandle logTarget;

        /// <summary>Routes the library's log messages to <paramref name="callback"/>(level, message);
        /// null turns logging off. The callback may run on any thread (in Unity: not the main thread,
        /// so do not touch Unity objects from it). Exceptions it throws are swallowed.</summary>
        public static void SetLogCallback(Action<int, string> callback)
        {
            lock (LogLock)
            {
                GCHandle previous = logTarget;
                if (callback == null)
                {
                    Native.Check(Native.s1_log_set(null, IntPtr.Zero));
                    logTarget = default(GCHandle);
                }
                else
                {
                    logTarget = GCHandle.Alloc(callback);
                    Native.Check(Native.s1_log_set(LogTrampoline, GCHandle.ToIntPtr(logTarget)));
                }
                // The previous target is deliberately not freed: a message in flight on another
                // thread may still be delivered to it (a few bytes leak per replacement).
                GC.KeepAlive(previous);
            }
        }

        [AOT.MonoPInvokeCallback(typeof(Native.LogCallback))]
        private static void OnLog(int level, IntPtr message, IntPtr userData)
        {
            try
            {
                Action<int, string> cb = GCHandle.FromIntPtr(userData).Target as Action<int, string>;
                if (cb != null) cb(level, Native.FromUtf8(message));
            }
            catch (Exception)
            {
                // Nothing may unwind into native code.
            }
        }
    }

    /// <summary>A loaded model bundle. Thread-safe: share one Engine between threads.</summary>
    public sealed class Engine : IDisposable
    {
        private readonly EngineHandle handle;

        /// <summary>Loads the bundle in <paramref name="bundleDir"/> (blocks while loading).</summary>
        /// <param name="backend">"auto" (null), "onnx-cpu", "onnx-cuda", "tensorrt" or "cuda".</param>
        /// <param name="ortLibraryPath">libonnxruntime path; null = ORT_DYLIB_PATH, then beside s1_mini.</param>
        public Engine(string bundleDir, string backend = null, string ortLibraryPath = null, bool? verifyHashes = null)
        {
            Native.EngineConfig config;
            Native.Check(Native.s1_engine_config_default(out config));
            if (verifyHashes.HasValue) config.verify_hashes = (byte)(verifyHashes.Value ? 1 : 0);
            byte[][] strings = { Native.Utf8(bundleDir), Native.Utf8(backend), Native.Utf8(ortLibraryPath) };
            GCHandle[] pins = new GCHandle[strings.Length];
            try
            {
                for (int i = 0; i < strings.Length; i++)
                    if (strings[i] != null) pins[i] = GCHandle.Alloc(strings[i], GCHandleType.Pinned);
                config.bundle_dir = strings[0] != null ? pins[0].AddrOfPinnedObject() : IntPtr.Zero;
                config.backend = strings[1] != null ? pins[1].AddrOfPinnedObject() : IntPtr.Zero;
                config.ort_library_path = strings[2] != null ? pins[2].AddrOfPinnedObject() : IntPtr.Zero;
                Native.Check(Native.s1_engine_new(ref config, out handle));
            }
            finally
            {
                foreach (GCHandle pin in pins) if (pin.IsAllocated) pin.Free();
            }
        }

        /// <summary>Synthesises the whole text (blocks; call it off the Unity main thread).</summary>
        public Audio Synthesize(string text, SynthParams? parameters = null, params Voice[] voices)
        {
            SynthParams p = parameters ?? SynthParams.Default();
            AudioHandle audio;
            using (new VoiceList(voices, ref p))
                Native.Check(Native.s1_synthesize(handle, Native.Utf8(text), ref p, out audio));
            using (audio)
            {
                Native.Audio raw = (Native.Audio)Marshal.PtrToStructure(audio.Raw, typeof(Native.Audio));
                return new Audio(Native.CopySamples(raw.samples, raw.num_samples), (int)raw.sample_rate_hz);
            }
        }

        /// <summary>Starts a stream: enumerate it (pull) or call Run() with ChunkReady handlers (push).</summary>
        public Stream Stream(string text, SynthParams? parameters = null, params Voice[] voices)
        {
            SynthParams p = parameters ?? SynthParams.Default();
            StreamHandle stream;
            using (new VoiceList(voices, ref p))
                Native.Check(Native.s1_stream_start(handle, Native.Utf8(text), ref p, out stream));
            return new Stream(stream);
        }

        /// <summary>A voice from reference audio: interleaved f32 samples with <paramref name="channels"/>
        /// channels at any rate (resampled), and what it says. Blocks while the codec encodes.</summary>
        public Voice CreateVoice(float[] samples, int channels, int sampleRateHz, string transcript)
        {
            if (samples == null) throw new ArgumentNullException("samples");
            if (channels < 1) throw new ArgumentOutOfRangeException("channels");
            VoiceHandle h;
            Native.Check(Native.s1_voice_create(handle, samples, new UIntPtr((uint)(samples.Length / channels)),
                (uint)channels, (uint)sampleRateHz, Native.Utf8(transcript), out h));
            return new Voice(h);
        }

        /// <summary>Frees the engine (the model unloads once its streams are disposed too).</summary>
        public void Dispose() { handle.Dispose(); }

        internal EngineHandle Handle { get { return handle; } }
    }

    /// <summary>One synthesis in progress, as chunks of PCM (each a new float[]).
    /// Use it from one thread at a time; Cancel() works from any thread.</summary>
    public sealed class Stream : IDisposable, IEnumerable<float[]>
    {
        private readonly StreamHandle handle;
        private Exception thrownByHandler;

        internal Stream(StreamHandle handle) { this.handle = handle; }

        /// <summary>Sample rate of the chunks in Hz, known after the first chunk (0 before).</summary>
        public int SampleRateHz { get; private set; }

        /// <summary>Raised by Run() on the calling thread for every chunk.</summary>
        public event Action<float[]> ChunkReady;

        /// <summary>Pulls the next chunk: false at the end of the text or after Cancel(); throws S1Exception on errors.</summary>
        public bool TryNext(out float[] chunk)
        {
            IntPtr raw;
            int st = Native.s1_stream_next(handle, out raw);
            if (st == Native.StatusEndOfStream || st == Native.StatusCancelled)
            {
                chunk = null;
                return false;
            }
            Native.Check(st);
            Native.Chunk c = (Native.Chunk)Marshal.PtrToStructure(raw, typeof(Native.Chunk));
            SampleRateHz = (int)c.sample_rate_hz;
            chunk = Native.CopySamples(c.samples, c.num_samples);
            return true;
        }

        /// <summary>Pull streaming: enumerates chunks until the end or Cancel(); errors throw S1Exception.</summary>
        public IEnumerator<float[]> GetEnumerator()
        {
            float[] chunk;
            while (TryNext(out chunk)) yield return chunk;
        }

        IEnumerator IEnumerable.GetEnumerator() { return GetEnumerator(); }

        private static readonly Native.ChunkCallback ChunkTrampoline = OnChunk;

        /// <summary>Push streaming: runs to the end, raising ChunkReady for each chunk on this thread.
        /// Returns false if cancelled (Cancel() or a handler exception, which is rethrown).</summary>
        public bool Run()
        {
            GCHandle self = GCHandle.Alloc(this);
            int st;
            try
            {
                st = Native.s1_stream_run(handle, ChunkTrampoline, GCHandle.ToIntPtr(self));
            }
            finally
            {
                self.Free();
            }
            if (thrownByHandler != null)
            {
                Exception e = thrownByHandler;
                thrownByHandler = null;
                throw new InvalidOperationException("a ChunkReady handler threw; the stream was cancelled", e);
            }
            if (st == Native.StatusCancelled) return false;
            Native.Check(st);
            return true;
        }

        [AOT.MonoPInvokeCallback(typeof(Native.ChunkCallback))]
        private static int OnChunk(IntPtr chunk, IntPtr userData)
        {
            Stream self = null;
            try
            {
                self = (Stream)GCHandle.FromIntPtr(userData).Target;
                Native.Chunk c = (Native.Chunk)Marshal.PtrToStructure(chunk, typeof(Native.Chunk));
                self.SampleRateHz = (int)c.sample_rate_hz;
                float[] pcm = Native.CopySamples(c.samples, c.num_samples);
                Action<float[]> handlers = self.ChunkReady;
                if (handlers != null) handlers(pcm);
                return 0;
            }
            catch (Exception e)
            {
                // Nothing may unwind into native code: cancel, and rethrow from Run().
                if (self != null) self.thrownByHandler = e;
                return 1;
            }
        }

        /// <summary>Asks the stream to stop; safe from any thread (e.g. a UI button while a worker pulls).</summary>
        public void Cancel()
        {
            if (handle.IsClosed) return;
            Native.Check(Native.s1_stream_cancel(handle));
        }

        public void Dispose() { handle.Dispose(); }
    }
}
