// The few UnityEngine types the package's scripts use, so CI compiles them with mcs (and runs
// S1MiniSpeaker under mono) without Unity. Signatures follow UnityEngine's; behaviour is minimal:
// tests set AudioSettings.outputSampleRate and Application.streamingAssetsPath, and call the
// MonoBehaviour messages by reflection, as Unity does.
using System;
using System.Collections.Generic;

namespace AOT
{
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class MonoPInvokeCallbackAttribute : Attribute
    {
        public MonoPInvokeCallbackAttribute(Type type) { }
    }
}

namespace UnityEngine
{
    public class Object { }

    public class Component : Object
    {
        internal readonly Dictionary<Type, Component> siblings = new Dictionary<Type, Component>();
        public T GetComponent<T>() where T : Component
        {
            Component c;
            return siblings.TryGetValue(typeof(T), out c) ? (T)c : null;
        }
        public void AddSibling(Component c) { siblings[c.GetType()] = c; }
    }

    public class Behaviour : Component
    {
        public bool enabled = true;
    }

    public class MonoBehaviour : Behaviour { }

    public sealed class AudioSource : Behaviour
    {
        public bool isPlaying { get; private set; }
        public void Play() { isPlaying = true; }
        public void Stop() { isPlaying = false; }
    }

    public static class AudioSettings
    {
        public static int outputSampleRate = 48000;
    }

    public static class Application
    {
        public static string streamingAssetsPath = "";
    }

    public static class Debug
    {
        public static readonly List<string> Logged = new List<string>();
        public static void Log(object message) { Logged.Add("log: " + message); }
        public static void LogError(object message) { Logged.Add("error: " + message); }
        public static void LogException(Exception exception) { Logged.Add("exception: " + exception); }
    }

    public enum KeyCode { None = 0, Space = 32, Escape = 27 }

    public static class Input
    {
        public static bool GetKeyDown(KeyCode key) { return false; }
    }

    [AttributeUsage(AttributeTargets.Class, AllowMultiple = true)]
    public sealed class RequireComponent : Attribute
    {
        public RequireComponent(Type type) { }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AddComponentMenu : Attribute
    {
        public AddComponentMenu(string menuName) { }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TooltipAttribute : Attribute
    {
        public TooltipAttribute(string tooltip) { }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TextAreaAttribute : Attribute { }
}
