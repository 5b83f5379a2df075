// Sample scene script: put it with an AudioSource and an S1MiniSpeaker on one GameObject, copy a
// bundle to Assets/StreamingAssets/s1-mini/, press Play, then Space to speak and Escape to stop.
using S1Mini.Unity;
using UnityEngine;

public sealed class SpeakerDemo : MonoBehaviour
{
    [Tooltip("The speaker to drive; default: the one on this GameObject.")]
    public S1MiniSpeaker speaker;

    [TextArea]
    public string line = "Hello from s1-mini.";

    public KeyCode speakKey = KeyCode.Space;
    public KeyCode stopKey = KeyCode.Escape;

    private void Start()
    {
        if (speaker == null) speaker = GetComponent<S1MiniSpeaker>();
        speaker.Failed += OnFailed;
    }

    private void Update()
    {
        if (Input.GetKeyDown(speakKey)) speaker.Speak(line);
        if (Input.GetKeyDown(stopKey)) speaker.StopSpeaking();
    }

    private void OnDestroy()
    {
        if (speaker != null) speaker.Failed -= OnFailed;
    }

    private static void OnFailed(System.Exception e)
    {
        Debug.LogError("s1-mini: " + e.Message);
    }
}
