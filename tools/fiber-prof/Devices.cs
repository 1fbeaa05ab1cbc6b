using FiberCuda.Backends;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;

namespace FiberCuda.Profile;

/// <summary>Picks the device: a real GPU when asked for (or found with auto), else the emulated GPU.</summary>
public static class Devices
{
    public static (IBackend Backend, IGpuDevice Device, string Note) Open(string kind)
    {
        string note = "";
        if (kind is "gpu" or "auto")
        {
            if (CudaDevice.TryCreate(out var dev, out var reason))
                return (new CudaBackend(dev!, ownsDevice: true), dev!, dev!.ToString());
            if (kind == "gpu") throw new InvalidOperationException("no usable GPU: " + reason);
            note = "no GPU (" + reason + "); ";
        }
        if (kind is "emu" or "auto")
        {
            var emu = new EmulatedDevice();
            return (new CudaBackend(emu, ownsDevice: true), emu, note + "emulated GPU: validation only, no timings");
        }
        throw new ArgumentException($"--device must be auto, gpu or emu, not '{kind}'");
    }
}
