// S1MiniSpeaker under mono with the UnityEngine stub and the real native library from the UPM
// package's Plugins folder (scripts/test-packages.sh): loads the tiny bundle from
// "StreamingAssets", speaks into OnAudioFilterRead, StopSpeaking/OnDisable drop queued audio,
// and a missing bundle reaches the Failed event from Update. Unity messages are private and
// called by reflection, as Unity calls them.
using System;
using System.Diagnostics;
using System.IO;
using System.Reflection;
using System.Threading;
using S1Mini.Unity;
using UnityEngine;

static class SpeakerTests
{
    static int failures;

    static void Check(bool ok, string what)
    {
        Console.WriteLine((ok ? "ok   " : "FAIL ") + what);
        if (!ok) failures++;
    }

    static void Send(S1MiniSpeaker s, string message, params object[] args)
    {
        MethodInfo m = typeof(S1MiniSpeaker).GetMethod(message, BindingFlags.Instance | BindingFlags.NonPublic);
        m.Invoke(s, args);
    }

    static S1MiniSpeaker Make(string bundleName)
    {
        var s = new S1MiniSpeaker { bundlePath = bundleName, maxFrames = 48, bufferSeconds = 2f };
        s.AddSibling(new AudioSource());
        return s;
    }

    static bool WaitFor(Func<bool> condition, int timeoutMs)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.ElapsedMilliseconds > timeoutMs) return false;
            Thread.Sleep(10);
        }
        return true;
    }

    // Pulls one audio callback (1024 stereo frames); returns how many frames were not silent.
    static int Pull(S1MiniSpeaker s, out bool channelsEqual)
    {
        var data = new float[2048];
        Send(s, "OnAudioFilterRead", data, 2);
        int loud = 0;
        channelsEqual = true;
        for (int f = 0; f < 1024; f++)
        {
            if (data[2 * f] != data[2 * f + 1]) channelsEqual = false;
            if (data[2 * f] != 0) loud++;
        }
        return loud;
    }

    static void speaker_speaks_into_audio_filter(string bundle)
    {
        S1MiniSpeaker s = Make(Path.GetFileName(bundle));
        Send(s, "OnEnable");
        Check(s.GetComponent<AudioSource>().isPlaying, "speaker_speaks_into_audio_filter: OnEnable plays the AudioSource");
        Check(WaitFor(() => s.IsLoaded, 120000), "speaker_speaks_into_audio_filter: engine loads on the worker");
        s.Speak("Hello from the speaker.");
        int loud = 0;
        bool equal = true;
        bool ok = WaitFor(() =>
        {
            bool e;
            loud += Pull(s, out e);
            equal &= e;
            return loud > 0 && !s.IsSpeaking;
        }, 120000);
        Check(ok && loud > 1000, "speaker_speaks_into_audio_filter: audio arrives, then the speaker goes quiet (" + loud + " frames)");
        Check(equal, "speaker_speaks_into_audio_filter: mono copied to both channels");
        bool eq;
        Check(Pull(s, out eq) == 0, "speaker_speaks_into_audio_filter: silence after the utterance");

        // Stop in the middle: queued text and audio are dropped.
        s.Speak("This sentence is long enough to be cut off in the middle.");
        s.Speak("And this one never plays.");
        Check(WaitFor(() => { bool e; return Pull(s, out e) > 0; }, 120000), "speaker_stop_drops_queued_audio: speaking");
        s.StopSpeaking();
        Check(Pull(s, out eq) == 0, "speaker_stop_drops_queued_audio: silence right after StopSpeaking");
        Check(WaitFor(() => !s.IsSpeaking, 30000), "speaker_stop_drops_queued_audio: nothing left queued");
        Thread.Sleep(300);
        Check(Pull(s, out eq) == 0, "speaker_stop_drops_queued_audio: still silent (the queued line was dropped)");

        // OnDisable cancels an utterance in progress.
        s.Speak("Disabled while speaking.");
        WaitFor(() => { bool e; return Pull(s, out e) > 0; }, 120000);
        Send(s, "OnDisable");
        Check(!s.IsSpeaking && !s.IsLoaded, "speaker_disable_cancels: no session after OnDisable");
        var data = new float[16];
        Send(s, "OnAudioFilterRead", data, 2);
        Check(Array.TrueForAll(data, v => v == 0), "speaker_disable_cancels: the filter writes nothing");
        bool threw = false;
        try { s.Speak("x"); } catch (InvalidOperationException) { threw = true; }
        Check(threw, "speaker_disable_cancels: Speak on a disabled speaker throws");
    }

    static void speaker_missing_bundle_reports_failed()
    {
        S1MiniSpeaker s = Make("no-such-bundle");
        Exception got = null;
        s.Failed += e => got = e;
        Send(s, "OnEnable");
        bool ok = WaitFor(() => { Send(s, "Update"); return got != null; }, 30000);
        var s1 = got as S1Mini.S1Exception;
        Check(ok && s1 != null && s1.StatusName == "S1_STATUS_BUNDLE_NOT_FOUND",
            "speaker_missing_bundle_reports_failed: Failed gets S1_STATUS_BUNDLE_NOT_FOUND (" + (got == null ? "nothing" : got.Message) + ")");
        Send(s, "OnDisable");
    }

    static int Main(string[] args)
    {
        AudioSettings.outputSampleRate = 48000;
        if (args.Length == 1)
        {
            Application.streamingAssetsPath = Path.GetDirectoryName(Path.GetFullPath(args[0]));
            speaker_speaks_into_audio_filter(Path.GetFullPath(args[0]));
        }
        else
        {
            Application.streamingAssetsPath = Path.GetTempPath();
            Console.WriteLine("skipped: speaker_speaks_into_audio_filter (no bundle argument)");
        }
        speaker_missing_bundle_reports_failed();
        Console.WriteLine(failures == 0 ? "speaker tests: all passed" : "speaker tests: " + failures + " failed");
        return failures == 0 ? 0 : 1;
    }
}
