// A C# program that uses the S1Mini NuGet package's assembly (scripts/test-packages.sh compiles
// it against lib/netstandard2.0/S1Mini.dll and runs it beside runtimes/linux-x64/native/, the way
// `dotnet publish -r linux-x64` lays an app out). No ORT_DYLIB_PATH, no LD_LIBRARY_PATH.
using System;
using S1Mini;

static class NuGetConsumer
{
    static int Main(string[] args)
    {
        Console.WriteLine("s1-mini " + S1.Version + ", backends: " + string.Join(", ", S1.BackendsAvailable()));
        try
        {
            new Engine("/nonexistent-bundle").Dispose();
            Console.Error.WriteLine("FAIL: a missing bundle loaded");
            return 1;
        }
        catch (S1Exception e)
        {
            if (e.StatusName != "S1_STATUS_BUNDLE_NOT_FOUND")
            {
                Console.Error.WriteLine("FAIL: missing bundle gave " + e.StatusName + ": " + e.Message);
                return 1;
            }
        }
        if (args.Length == 0) return 0;
        using (var engine = new Engine(args[0]))
        {
            SynthParams p = SynthParams.Default();
            p.MaxFrames = 32;
            Audio audio = engine.Synthesize("Hello from NuGet.", p);
            Console.WriteLine("synthesised " + audio.Samples.Length + " samples at " + audio.SampleRateHz + " Hz");
            return audio.Samples.Length > 0 && audio.SampleRateHz == 44100 ? 0 : 1;
        }
    }
}
