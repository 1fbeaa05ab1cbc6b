namespace FiberCuda.Autograd;

/// <summary>
/// Grad mode (per thread; on by default). Inside <c>using (Grad.NoGrad())</c> ops record nothing:
/// evaluation, optimizer steps, and the backward pass itself.
/// </summary>
public static class Grad
{
    [ThreadStatic] static bool _disabled;

    public static bool IsEnabled => !_disabled;

    public static IDisposable NoGrad() => new Mode(enabled: false);
    public static IDisposable EnableGrad() => new Mode(enabled: true);

    sealed class Mode : IDisposable
    {
        readonly bool _prevDisabled;
        bool _done;
        public Mode(bool enabled) { _prevDisabled = _disabled; _disabled = !enabled; }
        public void Dispose() { if (_done) return; _done = true; _disabled = _prevDisabled; }
    }
}
