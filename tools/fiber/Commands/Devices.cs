using FiberCuda.Backends;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Cli.Commands;

/// <summary>The commands' one way to turn <c>--device</c> into a backend.</summary>
public static class Devices
{
    public const string Help = "cpu | gpu | emu (emulated GPU) | auto (GPU if present, else CPU)";
    public static readonly string[] Names = ["cpu", "gpu", "emu", "auto"];

    /// <summary>The backend for <paramref name="device"/>; <c>Owned</c>: the caller disposes it (a CudaBackend).</summary>
    public static (IBackend Backend, bool Owned, string Name) OpenBackend(string device, DType dtype)
    {
        if (dtype == DType.F64 && device is "gpu" or "emu") throw new ArgumentException("--dtype f64 runs on the CPU only (--device cpu)");
        if (dtype == DType.F64) device = "cpu";
        switch (device)
        {
            case "cpu":
                return (Backend.Cpu, false, "cpu");
            case "emu":
                try { var b = new CudaBackend(new EmulatedDevice(), ownsDevice: true); return (b, true, b.Name); }
                catch (Exception e) when (e is not OutOfMemoryException)
                { throw new DeviceUnavailableException($"cannot start the emulated GPU: {e.Message}", e); }
            default: // gpu, auto
                string reason;
                try
                {
                    if (CudaDevice.TryCreate(out var d, out reason))
                    {
                        var b = new CudaBackend(d!, ownsDevice: true);
                        return (b, true, b.Name);
                    }
                }
                catch (Exception e) when (e is not OutOfMemoryException) { reason = e.Message; }
                if (device == "gpu") throw new DeviceUnavailableException($"--device gpu: no usable GPU: {reason}");
                Console.Error.WriteLine($"fiber: no GPU ({reason}); running on the CPU");
                return (Backend.Cpu, false, "cpu");
        }
    }
}
