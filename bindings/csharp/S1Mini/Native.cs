// Every entry point of the s1-mini C API (include/s1_mini.h), one DllImport each.
// Structs are blittable (no bool, no string fields) so that .NET, Mono and Unity IL2CPP lay them
// out exactly like C; strings go in as NUL-terminated UTF-8 byte arrays.
using System;
using System.Runtime.InteropServices;

namespace S1Mini
{
    /// <summary>s1_synth_params: options for one synthesis. Get one from <see cref="SynthParams.Default"/>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct SynthParams
    {
        /// <summary>Size of this struct in bytes; set by Default(), do not change.</summary>
        public uint StructSize;
        /// <summary>Softmax temperature in [0, 2]; 0 = greedy.</summary>
        public float Temperature;
        /// <summary>Nucleus mass kept, in (0, 1].</summary>
        public float TopP;
        /// <summary>Repetition penalty in (0, 2); 1 = none.</summary>
        public float RepetitionPenalty;
        /// <summary>Maximum length in frames (21.53 per second of audio), at least 1.</summary>
        public uint MaxFrames;
        /// <summary>Frames in the first streamed chunk, at least 1.</summary>
        public uint FirstChunkFrames;
        /// <summary>Frames in each later streamed chunk, at least 1.</summary>
        public uint ChunkFrames;
        /// <summary>Sampler seed; equal seeds give equal audio.</summary>
        public ulong Seed;
        /// <summary>1 = reproduce fish-speech exactly, 0 = fixed behaviour.</summary>
        public byte FishSpeechCompat;
        /// <summary>Voice handles (set by Engine.Synthesize/Stream from its voices argument).</summary>
        public IntPtr Voices;
        /// <summary>Number of voice handles.</summary>
        public UIntPtr NVoices;
        /// <summary>1 = reuse the voices' cached prompt prefix (default), 0 = prefill it every time.</summary>
        public byte PrefixCache;
        // _reserved0[7] of the C struct (set to 0 by Default(); keeps the next field past the 0.2 struct's end).
#pragma warning disable 169
        private byte _reserved0a, _reserved0b, _reserved0c, _reserved0d, _reserved0e, _reserved0f, _reserved0g;
#pragma warning restore 169
        /// <summary>1 = special-token names typed in the text and transcripts ("&lt;|im_end|&gt;", ...) become control tokens (fish-speech); 0 (default) = plain text. Only for trusted text.</summary>
        public byte ParseSpecialTokens;

        /// <summary>The library's defaults (s1_synth_params_default).</summary>
        public static SynthParams Default()
        {
            SynthParams p;
            Native.Check(Native.s1_synth_params_default(out p));
            return p;
        }
    }

    internal static class Native
    {
#if S1_MINI_STATIC || (UNITY_IOS && !UNITY_EDITOR)
        /// <summary>Linked statically (iOS, or S1_MINI_STATIC defined): the symbols are in the executable.</summary>
        internal const string Lib = "__Internal";
#else
        /// <summary>The one library name: libs1_mini.so, libs1_mini.dylib or s1_mini.dll.</summary>
        internal const string Lib = "s1_mini";
#endif

        internal const int StatusOk = 0;
        internal const int StatusBufferTooSmall = 4;
        internal const int StatusCancelled = 300;
        internal const int StatusEndOfStream = 301;

        [StructLayout(LayoutKind.Sequential)]
        internal struct EngineConfig
        {
            public uint struct_size;
            public uint intra_op_threads;
            public IntPtr bundle_dir;
            public IntPtr backend;
            public IntPtr ort_library_path;
            public byte verify_hashes;
            // Appended fields (s1_mini.h order). s1_engine_config_default writes the whole
            // struct, so this layout must match the header's exactly.
            public ulong tensorrt_workspace_bytes;
            public uint inter_op_threads;
            public uint device_id;
            public int graph_optimization;
            public int tensorrt_precision;
            public int cudnn_conv_algo_search;
            public uint tensorrt_profile_opt_tokens;
            public uint tensorrt_profile_max_tokens;
            public IntPtr cache_dir;
            public IntPtr tensorrt_int8_calibration_file;
            public int cuda_weights;
            public byte optimized_model_cache;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct Audio
        {
            public IntPtr samples;
            public UIntPtr num_samples;
            public uint sample_rate_hz;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct Chunk
        {
            public IntPtr samples;
            public UIntPtr num_samples;
            public uint sample_rate_hz;
            public uint first_frame;
        }

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate int ChunkCallback(IntPtr chunk, IntPtr userData);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void LogCallback(int level, IntPtr message, IntPtr userData);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_voice_create(EngineHandle engine, float[] samples, UIntPtr numFrames, uint channels, uint sampleRateHz, byte[] transcript, out VoiceHandle voice);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_voice_load(byte[] path, out VoiceHandle voice);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_voice_save(VoiceHandle voice, byte[] path);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_voice_frames(VoiceHandle voice, out UIntPtr frames);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_voice_free(IntPtr voice);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr s1_last_error();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr s1_status_name(int status);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr s1_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_backends_available(byte[] buf, UIntPtr bufSize, out UIntPtr outLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_engine_config_default(out EngineConfig config);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_engine_new(ref EngineConfig config, out EngineHandle engine);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_engine_free(IntPtr engine);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_synth_params_default(out SynthParams parameters);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_synthesize(EngineHandle engine, byte[] text, ref SynthParams parameters, out AudioHandle audio);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_audio_free(IntPtr audio);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_stream_start(EngineHandle engine, byte[] text, ref SynthParams parameters, out StreamHandle stream);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_stream_next(StreamHandle stream, out IntPtr chunk);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_stream_run(StreamHandle stream, ChunkCallback callback, IntPtr userData);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_stream_cancel(StreamHandle stream);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_stream_free(IntPtr stream);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int s1_log_set(LogCallback callback, IntPtr userData);

        /// <summary>The raw-pointer overloads exist for the error-path tests only (NULL and freed handles).</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, EntryPoint = "s1_synthesize")]
        internal static extern int s1_synthesize_raw(IntPtr engine, byte[] text, IntPtr parameters, out IntPtr audio);

        /// <summary>NUL-terminated UTF-8 bytes of a string.</summary>
        internal static byte[] Utf8(string s)
        {
            if (s == null) return null;
            byte[] bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(s) + 1];
            System.Text.Encoding.UTF8.GetBytes(s, 0, s.Length, bytes, 0);
            return bytes;
        }

        /// <summary>Reads a NUL-terminated UTF-8 C string (PtrToStringAnsi is not UTF-8 on Windows).</summary>
        internal static string FromUtf8(IntPtr p)
        {
            if (p == IntPtr.Zero) return "";
            int len = 0;
            while (Marshal.ReadByte(p, len) != 0) len++;
            byte[] bytes = new byte[len];
            Marshal.Copy(p, bytes, 0, len);
            return System.Text.Encoding.UTF8.GetString(bytes);
        }

        /// <summary>This thread's last error message; read it right after the failed call.</summary>
        internal static string LastError()
        {
            return FromUtf8(s1_last_error());
        }

        /// <summary>Throws <see cref="S1Exception"/> for any status but OK.</summary>
        internal static void Check(int status)
        {
            if (status != StatusOk) throw new S1Exception(status, LastError());
        }

        /// <summary>Copies <paramref name="count"/> floats out of library memory.</summary>
        internal static float[] CopySamples(IntPtr samples, UIntPtr count)
        {
            float[] pcm = new float[checked((int)count.ToUInt64())];
            if (pcm.Length > 0) Marshal.Copy(samples, pcm, 0, pcm.Length);
            return pcm;
        }
    }
}
