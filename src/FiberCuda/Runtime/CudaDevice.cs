using System.Runtime.InteropServices;
using System.Text;
using FiberCuda.Kernels;
using FiberCuda.Native;

namespace FiberCuda.Runtime;

/// <summary>A kernel function of a loaded module on a <see cref="CudaDevice"/>.</summary>
public sealed class CudaKernel : IKernel
{
    internal CudaKernel(CudaDevice device, string file, string name, nint function, int staticSmem, int numRegs, int maxThreads)
    {
        Device = device; File = file; Name = name; Function = function;
        StaticSharedBytes = staticSmem; NumRegs = numRegs; MaxThreadsPerBlock = maxThreads;
    }

    public CudaDevice Device { get; }
    public string File { get; }
    public string Name { get; }
    public nint Function { get; }
    public int StaticSharedBytes { get; }
    public int NumRegs { get; }
    public int MaxThreadsPerBlock { get; }
    public int MaxDynamicSharedBytes { get; set; }
    /// <summary>The CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES value already set (48 KB is the default limit).</summary>
    internal int AppliedDynamicSmem = CudaDevice.DefaultDynamicSmemLimit;
    public override string ToString() => $"{File}:{Name}";
}

/// <summary>
/// The real GPU: CUDA driver API on the device's primary context, one non-blocking stream for all work, kernels from
/// NVRTC, GEMMs from cuBLASLt. Every public entry point makes the context current first, because the current context
/// is per OS thread and callers may be thread-pool or finalizer threads.
/// </summary>
public sealed unsafe class CudaDevice : IGpuDevice
{
    /// <summary>Dynamic shared memory a kernel may use without raising its attribute.</summary>
    public const int DefaultDynamicSmemLimit = 48 * 1024;

    readonly int _device;
    nint _ctx, _stream;
    readonly object _kernelLock = new();
    readonly Dictionary<string, nint> _modules = new();
    readonly Dictionary<(string file, string name), CudaKernel> _kernels = new();
    CublasLtGemm? _lt;
    readonly object _ltLock = new();
    readonly bool _syncLaunches = Environment.GetEnvironmentVariable("FIBER_SYNC_LAUNCHES") == "1";
    volatile bool _disposed;

    public string Name { get; }
    public bool IsEmulated => false;
    public int ComputeCapability { get; }
    public long TotalMemory { get; }
    public int Ordinal => _device;
    public int MultiprocessorCount { get; }
    /// <summary>Opt-in maximum shared memory per block (227 KB on Hopper).</summary>
    public int MaxSharedMemoryPerBlockOptin { get; }
    public int DriverVersion { get; }
    public nint Context => _ctx;
    public nint Stream => _stream;

    /// <summary>Opens the GPU, or returns false with a reason (no driver, no device, missing libraries...).</summary>
    public static bool TryCreate(out CudaDevice? device, out string reason, int ordinal = -1)
    {
        try
        {
            device = new CudaDevice(ordinal);
            reason = "";
            return true;
        }
        catch (Exception e) when (e is GpuNotAvailableException or CudaException or DllNotFoundException or EntryPointNotFoundException)
        {
            device = null;
            reason = e.Message;
            return false;
        }
    }

    /// <param name="ordinal">Device index; -1 = FIBER_CUDA_DEVICE or 0.</param>
    public CudaDevice(int ordinal = -1)
    {
        if (ordinal < 0) ordinal = int.TryParse(Environment.GetEnvironmentVariable("FIBER_CUDA_DEVICE"), out var o) ? o : 0;
        CuDriver.Load();
        int rc = CuDriver.cuInit(0);
        if (rc != CuDriver.CUDA_SUCCESS)
        {
            var why = $"cuInit failed: {CuDriver.ErrorName(rc)} ({rc}): {CuDriver.ErrorString(rc)} [libcuda: {CuDriver.LibraryPath}]";
            // NO_DEVICE, STUB_LIBRARY, INSUFFICIENT_DRIVER, OPERATING_SYSTEM...: all mean "no usable GPU here".
            throw new GpuNotAvailableException(why + ". " + GpuNotAvailableException.InstallHint("cuda"));
        }
        int count, dev, v;
        CuDriver.Check(CuDriver.cuDeviceGetCount(&count));
        if (count == 0) throw new GpuNotAvailableException("the CUDA driver reports no GPU");
        if (ordinal >= count) throw new GpuNotAvailableException($"GPU ordinal {ordinal} requested but only {count} present");
        CuDriver.Check(CuDriver.cuDeviceGet(&dev, ordinal));
        _device = dev;
        CuDriver.Check(CuDriver.cuDriverGetVersion(&v));
        DriverVersion = v;

        var name = stackalloc byte[256];
        CuDriver.Check(CuDriver.cuDeviceGetName(name, 256, dev));
        Name = Marshal.PtrToStringUTF8((nint)name) ?? "CUDA device";
        ComputeCapability = Attr(CuDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) * 10 + Attr(CuDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        MultiprocessorCount = Attr(CuDriver.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
        MaxSharedMemoryPerBlockOptin = Attr(CuDriver.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
        nuint total;
        CuDriver.Check(CuDriver.cuDeviceTotalMem_v2(&total, dev));
        TotalMemory = (long)total;

        nint ctx, stream;
        CuDriver.Check(CuDriver.cuDevicePrimaryCtxRetain(&ctx, dev));
        _ctx = ctx;
        try
        {
            CuDriver.Check(CuDriver.cuCtxSetCurrent(_ctx));
            CuDriver.Check(CuDriver.cuStreamCreate(&stream, CuDriver.CU_STREAM_NON_BLOCKING));
            _stream = stream;
        }
        catch
        {
            CuDriver.cuDevicePrimaryCtxRelease_v2(dev);
            _ctx = 0;
            throw;
        }
    }

    int Attr(int attribute)
    {
        int value;
        CuDriver.Check(CuDriver.cuDeviceGetAttribute(&value, attribute, _device), $"attribute {attribute}");
        return value;
    }

    /// <summary>Makes this device's context current on the calling thread.</summary>
    public void Bind()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CuDriver.Check(CuDriver.cuCtxSetCurrent(_ctx));
    }

    public override string ToString() => $"{Name} (sm_{ComputeCapability}, {TotalMemory >> 20} MiB, driver {DriverVersion / 1000}.{DriverVersion % 1000 / 10})";

    // ---------------- memory ----------------

    public nint Malloc(long bytes)
    {
        Bind();
        ulong p;
        CuDriver.Check(CuDriver.cuMemAlloc_v2(&p, (nuint)Math.Max(bytes, 1)), $"allocating {bytes} bytes");
        return (nint)p;
    }

    public void Free(nint ptr)
    {
        if (ptr == 0 || _disposed) return; // after Dispose the context (and all its memory) is gone
        Bind();
        // Work queued on our non-blocking stream may still use the block; cuMemFree does not order against it.
        CuDriver.Check(CuDriver.cuStreamSynchronize(_stream));
        CuDriver.Check(CuDriver.cuMemFree_v2((ulong)ptr));
    }

    public nint MallocHost(long bytes)
    {
        Bind();
        void* p;
        CuDriver.Check(CuDriver.cuMemAllocHost_v2(&p, (nuint)Math.Max(bytes, 1)), $"pinning {bytes} bytes");
        return (nint)p;
    }

    public void FreeHost(nint ptr)
    {
        if (ptr == 0 || _disposed) return;
        Bind();
        CuDriver.Check(CuDriver.cuStreamSynchronize(_stream));
        CuDriver.Check(CuDriver.cuMemFreeHost((void*)ptr));
    }

    public void CopyHostToDevice(nint dst, void* src, long bytes)
    {
        if (bytes == 0) return;
        Bind();
        CuDriver.Check(CuDriver.cuMemcpyHtoDAsync_v2((ulong)dst, src, (nuint)bytes, _stream));
        // The caller may reuse src on return (and src may be pinned, where the copy is truly asynchronous).
        CuDriver.Check(CuDriver.cuStreamSynchronize(_stream));
    }

    public void CopyDeviceToHost(void* dst, nint src, long bytes)
    {
        if (bytes == 0) return;
        Bind();
        CuDriver.Check(CuDriver.cuMemcpyDtoHAsync_v2(dst, (ulong)src, (nuint)bytes, _stream));
        CuDriver.Check(CuDriver.cuStreamSynchronize(_stream));
    }

    public void CopyDeviceToDevice(nint dst, nint src, long bytes)
    {
        if (bytes == 0) return;
        Bind();
        CuDriver.Check(CuDriver.cuMemcpyDtoDAsync_v2((ulong)dst, (ulong)src, (nuint)bytes, _stream));
    }

    public void Memset(nint dst, byte value, long bytes)
    {
        if (bytes == 0) return;
        Bind();
        CuDriver.Check(CuDriver.cuMemsetD8Async((ulong)dst, value, (nuint)bytes, _stream));
    }

    /// <summary>(free, total) device memory in bytes.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        Bind();
        nuint f, t;
        CuDriver.Check(CuDriver.cuMemGetInfo_v2(&f, &t));
        return ((long)f, (long)t);
    }

    public void Synchronize()
    {
        Bind();
        CuDriver.Check(CuDriver.cuStreamSynchronize(_stream));
    }

    // ---------------- kernels ----------------

    /// <summary>Compiles (NVRTC, disk-cached) and loads kernels/<paramref name="file"/> once, then resolves <paramref name="name"/>.</summary>
    public IKernel GetKernel(string file, string name)
    {
        lock (_kernelLock)
        {
            if (_kernels.TryGetValue((file, name), out var k)) return k;
            Bind();
            if (!_modules.TryGetValue(file, out var module))
            {
                var compiled = NvrtcCompiler.Shared.CompileForDevice(file, ComputeCapability);
                module = LoadModule(compiled);
                _modules[file] = module;
            }
            return Resolve(file, name, module);
        }
    }

    /// <summary>Compiles and loads kernels/<paramref name="file"/> now (warm-up; load errors surface here, not mid-step).</summary>
    public void Preload(string file)
    {
        lock (_kernelLock)
        {
            if (_modules.ContainsKey(file)) return;
            Bind();
            _modules[file] = LoadModule(NvrtcCompiler.Shared.CompileForDevice(file, ComputeCapability));
        }
    }

    /// <summary>A kernel from source text (tests, generated code); <paramref name="moduleKey"/> names the module in the cache.</summary>
    /// <param name="forcePtx">Load PTX (driver JIT) even when CUBIN is possible — exercises the fallback path.</param>
    public IKernel GetKernelFromSource(string moduleKey, string source, string name, IReadOnlyDictionary<string, string>? headers = null,
                                      bool forcePtx = false)
    {
        lock (_kernelLock)
        {
            var file = "source:" + moduleKey + (forcePtx ? ":ptx" : "");
            if (_kernels.TryGetValue((file, name), out var k)) return k;
            Bind();
            if (!_modules.TryGetValue(file, out var module))
            {
                var nvrtc = NvrtcCompiler.Shared;
                headers ??= new Dictionary<string, string>();
                bool cubin = !forcePtx && (nvrtc.SupportedArchs.Count == 0 || nvrtc.SupportedArchs.Contains(ComputeCapability));
                int sm = cubin ? ComputeCapability : nvrtc.SupportedArchs.Where(a => a <= ComputeCapability).DefaultIfEmpty(ComputeCapability).Max();
                module = LoadModule(nvrtc.CompileSource(moduleKey + ".cu", source, headers, sm, cubin));
                _modules[file] = module;
            }
            return Resolve(file, name, module);
        }
    }

    nint LoadModule(CompiledKernel compiled)
    {
        nint module;
        const int logSize = 16 * 1024;
        var log = new byte[logSize];
        int* opts = stackalloc int[2] { CuDriver.CU_JIT_ERROR_LOG_BUFFER, CuDriver.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
        void** vals = stackalloc void*[2];
        int rc;
        fixed (byte* img = compiled.Image)
        fixed (byte* lp = log)
        {
            vals[0] = lp;
            vals[1] = (void*)(nint)logSize; // option values are passed in the pointer slot itself
            rc = CuDriver.cuModuleLoadDataEx(&module, img, 2, opts, vals);
        }
        if (rc != CuDriver.CUDA_SUCCESS)
        {
            int n = Array.IndexOf(log, (byte)0);
            var jit = Encoding.UTF8.GetString(log, 0, n < 0 ? log.Length : n).Trim();
            CuDriver.Check(rc, $"loading module kernels/{compiled.File} ({(compiled.IsCubin ? "CUBIN" : "PTX")} {compiled.Arch}, " +
                               $"{compiled.Image.Length} bytes) on sm_{ComputeCapability}" + (jit.Length > 0 ? $"; JIT log: {jit}" : ""));
        }
        return module;
    }

    CudaKernel Resolve(string file, string name, nint module)
    {
        nint fn;
        var nameZ = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* pn = nameZ)
            CuDriver.Check(CuDriver.cuModuleGetFunction(&fn, module, pn),
                           $"kernel '{name}' in kernels/{file} (is it declared extern \"C\" __global__?)");
        int smem, regs, maxThreads;
        CuDriver.Check(CuDriver.cuFuncGetAttribute(&smem, CuDriver.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, fn));
        CuDriver.Check(CuDriver.cuFuncGetAttribute(&regs, CuDriver.CU_FUNC_ATTRIBUTE_NUM_REGS, fn));
        CuDriver.Check(CuDriver.cuFuncGetAttribute(&maxThreads, CuDriver.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn));
        var k = new CudaKernel(this, file, name, fn, smem, regs, maxThreads);
        _kernels[(file, name)] = k;
        return k;
    }

    public void Launch(IKernel kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, void** args)
    {
        if (kernel is not CudaKernel k || k.Device != this)
            throw new ArgumentException($"kernel {kernel.File}:{kernel.Name} does not belong to this CUDA device", nameof(kernel));
        if (grid.X == 0 || grid.Y == 0 || grid.Z == 0 || block.X == 0 || block.Y == 0 || block.Z == 0)
            throw new ArgumentException($"empty launch of {k}: grid {grid} block {block}");
        long threads = (long)block.X * block.Y * block.Z;
        if (threads > k.MaxThreadsPerBlock)
            throw new ArgumentException($"launch of {k}: block {block} has {threads} threads, the kernel allows {k.MaxThreadsPerBlock} " +
                                        $"({k.NumRegs} registers/thread)");
        Bind();
        if (dynamicSharedBytes > k.AppliedDynamicSmem) RaiseSmemLimit(k, dynamicSharedBytes);
        int rc = CuDriver.cuLaunchKernel(k.Function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z,
                                         (uint)dynamicSharedBytes, _stream, args, null);
        if (rc != CuDriver.CUDA_SUCCESS)
            CuDriver.Check(rc, $"launching {k} grid {grid} block {block} smem {dynamicSharedBytes}");
        if (_syncLaunches)
        {
            rc = CuDriver.cuStreamSynchronize(_stream);
            if (rc != CuDriver.CUDA_SUCCESS)
                CuDriver.Check(rc, $"kernel {k} failed (FIBER_SYNC_LAUNCHES=1; grid {grid} block {block} smem {dynamicSharedBytes})");
        }
    }

    void RaiseSmemLimit(CudaKernel k, int bytes)
    {
        int want = Math.Max(bytes, k.MaxDynamicSharedBytes);
        if (want + k.StaticSharedBytes > MaxSharedMemoryPerBlockOptin)
        {
            if (bytes + k.StaticSharedBytes > MaxSharedMemoryPerBlockOptin)
                throw new ArgumentException($"{k} needs {bytes} B dynamic + {k.StaticSharedBytes} B static shared memory; " +
                                            $"{Name} allows {MaxSharedMemoryPerBlockOptin} B per block");
            want = bytes;
        }
        CuDriver.Check(CuDriver.cuFuncSetAttribute(k.Function, CuDriver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, want),
                       $"raising dynamic shared memory of {k} to {want} B");
        k.AppliedDynamicSmem = want;
    }

    // ---------------- GEMM ----------------

    /// <summary>The cuBLASLt state of this device (handle, workspace, plan cache); created on first use.</summary>
    public CublasLtGemm Lt
    {
        get
        {
            if (_lt is { } lt) return lt;
            lock (_ltLock)
            {
                Bind();
                return _lt ??= new CublasLtGemm(_stream, Malloc, Free);
            }
        }
    }

    public void Gemm(in GemmDesc g)
    {
        var lt = Lt;
        Bind();
        lt.Gemm(g);
        if (_syncLaunches)
        {
            int rc = CuDriver.cuStreamSynchronize(_stream);
            if (rc != CuDriver.CUDA_SUCCESS) CuDriver.Check(rc, $"cuBLASLt GEMM M={g.M} N={g.N} K={g.K} failed (FIBER_SYNC_LAUNCHES=1)");
        }
    }

    /// <summary>Direct cuBLASLt call (fresh descriptors and heuristic every time), for profiler comparisons.</summary>
    public void GemmUncached(in GemmDesc g)
    {
        var lt = Lt;
        Bind();
        lt.GemmUncached(g);
    }

    // ---------------- timing ----------------

    public ITimer CreateTimer() => new CudaTimer(this);

    sealed class CudaTimer : ITimer
    {
        readonly CudaDevice _dev;
        nint _start, _stop;
        bool _started, _stopped;

        public CudaTimer(CudaDevice dev)
        {
            _dev = dev;
            dev.Bind();
            nint a, b;
            CuDriver.Check(CuDriver.cuEventCreate(&a, CuDriver.CU_EVENT_DEFAULT));
            _start = a;
            CuDriver.Check(CuDriver.cuEventCreate(&b, CuDriver.CU_EVENT_DEFAULT));
            _stop = b;
        }

        public void Start()
        {
            _dev.Bind();
            CuDriver.Check(CuDriver.cuEventRecord(_start, _dev._stream));
            _started = true; _stopped = false;
        }

        public void Stop()
        {
            if (!_started) throw new InvalidOperationException("timer stopped before it was started");
            _dev.Bind();
            CuDriver.Check(CuDriver.cuEventRecord(_stop, _dev._stream));
            _stopped = true;
        }

        public float ElapsedMs()
        {
            if (!_stopped) throw new InvalidOperationException("timer read before Stop()");
            _dev.Bind();
            CuDriver.Check(CuDriver.cuEventSynchronize(_stop));
            float ms;
            CuDriver.Check(CuDriver.cuEventElapsedTime(&ms, _start, _stop));
            return ms;
        }

        public void Dispose()
        {
            if (_start == 0 || _dev._disposed) { _start = _stop = 0; return; }
            _dev.Bind();
            CuDriver.cuEventDestroy_v2(_start);
            CuDriver.cuEventDestroy_v2(_stop);
            _start = _stop = 0;
        }
    }

    // ---------------- teardown ----------------

    public void Dispose()
    {
        if (_disposed) return;
        // Best effort throughout: a sticky error (e.g. an illegal address) must not leak the context.
        var errors = new List<string>();
        void Try(Action a) { try { a(); } catch (Exception e) { errors.Add(e.Message); } }
        Try(() => CuDriver.Check(CuDriver.cuCtxSetCurrent(_ctx)));
        Try(() => CuDriver.Check(CuDriver.cuStreamSynchronize(_stream)));
        Try(() => _lt?.Dispose());
        _lt = null;
        lock (_kernelLock)
        {
            foreach (var m in _modules.Values) Try(() => CuDriver.Check(CuDriver.cuModuleUnload(m)));
            _modules.Clear();
            _kernels.Clear();
        }
        Try(() => CuDriver.Check(CuDriver.cuStreamDestroy_v2(_stream)));
        _stream = 0;
        _disposed = true;
        Try(() => CuDriver.Check(CuDriver.cuDevicePrimaryCtxRelease_v2(_device)));
        _ctx = 0;
        if (errors.Count > 0 && Environment.GetEnvironmentVariable("FIBER_DEBUG") is { Length: > 0 })
            Console.Error.WriteLine("[CudaDevice.Dispose] " + string.Join("\n", errors));
    }
}
