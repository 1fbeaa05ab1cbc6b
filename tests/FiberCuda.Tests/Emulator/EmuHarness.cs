using System.Runtime.InteropServices;
using FiberCuda.Runtime;

namespace FiberCuda.Tests.Emulator;

/// <summary>Uploads, downloads and launches on one device (the emulator's tests and their GPU twins).</summary>
internal sealed unsafe class ProbeHarness(IGpuDevice device)
{
    public IGpuDevice Device { get; } = device;

    public nint Upload<T>(T[] data) where T : unmanaged
    {
        long bytes = (long)data.Length * sizeof(T);
        var p = Device.Malloc(Math.Max(bytes, 1));
        fixed (T* s = data) Device.CopyHostToDevice(p, s, bytes);
        return p;
    }

    public nint Zeros<T>(int n) where T : unmanaged
    {
        var p = Device.Malloc(Math.Max((long)n * sizeof(T), 1));
        Device.Memset(p, 0, Math.Max((long)n * sizeof(T), 1));
        return p;
    }

    public T[] Download<T>(nint p, int n) where T : unmanaged
    {
        var r = new T[n];
        fixed (T* d = r) Device.CopyDeviceToHost(d, p, (long)n * sizeof(T));
        Device.Synchronize();
        return r;
    }

    /// <summary>Launches kernels/<paramref name="file"/>:<paramref name="name"/>; args are nint, int, long, ulong or float.</summary>
    public void Launch(string file, string name, Dim3 grid, Dim3 block, int smem, params object[] args)
    {
        var k = Device.GetKernel(file, name);
        if (smem > k.MaxDynamicSharedBytes && smem <= EmulatedDevice.MaxDynamicSharedBytesLimit) k.MaxDynamicSharedBytes = smem;
        LaunchKernel(k, grid, block, smem, args);
    }

    public void LaunchKernel(IKernel k, Dim3 grid, Dim3 block, int smem, params object[] args)
    {
        var values = (long*)NativeMemory.AllocZeroed((nuint)Math.Max(args.Length, 1), 8);
        var ptrs = (void**)NativeMemory.Alloc((nuint)Math.Max(args.Length, 1), (nuint)sizeof(void*));
        try
        {
            for (int i = 0; i < args.Length; i++)
            {
                var slot = values + i;
                switch (args[i])
                {
                    case nint v: *(nint*)slot = v; break;
                    case int v: *(int*)slot = v; break;
                    case long v: *slot = v; break;
                    case ulong v: *(ulong*)slot = v; break;
                    case float v: *(float*)slot = v; break;
                    default: throw new ArgumentException($"unsupported kernel argument type {args[i].GetType()}");
                }
                ptrs[i] = slot;
            }
            Device.Launch(k, grid, block, smem, ptrs);
        }
        finally
        {
            NativeMemory.Free(values);
            NativeMemory.Free(ptrs);
        }
    }
}

/// <summary>The shared <see cref="EmulatedDevice"/> of the emulator tests, with <see cref="ProbeHarness"/> helpers.</summary>
internal static class EmuHarness
{
    static readonly Lazy<ProbeHarness> Shared = new(() => new ProbeHarness(new EmulatedDevice()));
    public static ProbeHarness Harness => Shared.Value;
    public static IGpuDevice Device => Shared.Value.Device;

    public static nint Upload<T>(T[] data) where T : unmanaged => Harness.Upload(data);
    public static nint Zeros<T>(int n) where T : unmanaged => Harness.Zeros<T>(n);
    public static T[] Download<T>(nint p, int n) where T : unmanaged => Harness.Download<T>(p, n);
    public static void Launch(string file, string name, Dim3 grid, Dim3 block, int smem, params object[] args)
        => Harness.Launch(file, name, grid, block, smem, args);
    public static void LaunchKernel(IKernel k, Dim3 grid, Dim3 block, int smem, params object[] args)
        => Harness.LaunchKernel(k, grid, block, smem, args);
}
