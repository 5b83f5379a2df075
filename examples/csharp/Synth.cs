// Synthesises text to a 16-bit WAV file with the C# binding, pulling chunks as they are decoded.
// Usage: mono Synth.exe BUNDLE_DIR OUT.wav "Text to speak."  (libs1_mini beside it or on the
// library path; ORT_DYLIB_PATH names libonnxruntime)
using System;
using System.Collections.Generic;
using System.IO;
using S1Mini;

static class Synth
{
    static int Main(string[] args)
    {
        if (args.Length != 3)
        {
            Console.Error.WriteLine("usage: Synth.exe BUNDLE_DIR OUT.wav TEXT");
            return 2;
        }
        try
        {
            using (Engine engine = new Engine(args[0]))
            {
                SynthParams p = SynthParams.Default();
                p.MaxFrames = 64;
                List<float> pcm = new List<float>();
                int rateHz;
                using (S1Mini.Stream stream = engine.Stream(args[2], p))
                {
                    foreach (float[] chunk in stream) pcm.AddRange(chunk);
                    rateHz = stream.SampleRateHz;
                }
                WriteWav(args[1], pcm, rateHz);
                Console.WriteLine("wrote " + args[1] + ": " + pcm.Count + " samples at " + rateHz + " Hz");
            }
            return 0;
        }
        catch (S1Exception e)
        {
            Console.Error.WriteLine(e.Message);
            return 1;
        }
    }

    static void WriteWav(string path, List<float> pcm, int rateHz)
    {
        using (BinaryWriter w = new BinaryWriter(File.Create(path)))
        {
            w.Write(new[] { (byte)'R', (byte)'I', (byte)'F', (byte)'F' });
            w.Write(36 + pcm.Count * 2);
            w.Write(new[] { (byte)'W', (byte)'A', (byte)'V', (byte)'E', (byte)'f', (byte)'m', (byte)'t', (byte)' ' });
            w.Write(16);
            w.Write((short)1);
            w.Write((short)1);
            w.Write(rateHz);
            w.Write(rateHz * 2);
            w.Write((short)2);
            w.Write((short)16);
            w.Write(new[] { (byte)'d', (byte)'a', (byte)'t', (byte)'a' });
            w.Write(pcm.Count * 2);
            foreach (float s in pcm) w.Write((short)(Math.Max(-1f, Math.Min(1f, s)) * 32767f));
        }
    }
}
