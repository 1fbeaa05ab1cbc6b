namespace FiberCuda.Kernels;

/// <summary>The emulated GPU needs a C++17 compiler (g++) and none was found.</summary>
public sealed class EmuToolchainMissingException(string compiler, Exception? inner = null)
    : Exception($"The emulated GPU compiles kernels with '{compiler}', which was not found on PATH. " +
                "Install g++ (Debian/Ubuntu: apt-get install g++) or point FIBER_EMU_CXX at a g++ >= 9.", inner)
{
    public string Compiler { get; } = compiler;
}

/// <summary>g++ rejected a kernel file; <see cref="File"/>/<see cref="Line"/> locate the first error.</summary>
public sealed class EmuCompileException(string kernelFile, string? file, int line, string compilerOutput)
    : Exception($"emulator compile of kernels/{kernelFile} failed" +
                (file is null ? "" : $" at {file}:{line}") + ":\n" + compilerOutput)
{
    /// <summary>The kernel file that was being compiled (relative to kernels/).</summary>
    public string KernelFile { get; } = kernelFile;
    /// <summary>The file of the first error ("kernels/..."), or null if g++'s output had no location.</summary>
    public string? File { get; } = file;
    public int Line { get; } = line;
    public string CompilerOutput { get; } = compilerOutput;
}

/// <summary>A launch on the emulated GPU failed (bad configuration, deadlock, __trap, misuse of a collective).</summary>
public sealed class EmuLaunchException(string kernelFile, string kernel, string message)
    : Exception($"kernel {kernel} (kernels/{kernelFile}) on the emulated GPU: {message}")
{
    public string KernelFile { get; } = kernelFile;
    public string Kernel { get; } = kernel;
    public string Reason { get; } = message;
}
