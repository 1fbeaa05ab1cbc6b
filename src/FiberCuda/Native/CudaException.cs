namespace FiberCuda.Native;

/// <summary>A CUDA driver, NVRTC or cuBLAS(Lt) call returned an error.</summary>
public class CudaException : Exception
{
    /// <summary>"CUDA driver", "NVRTC", "cuBLAS" or "cuBLASLt".</summary>
    public string Library { get; }
    public int Code { get; }
    /// <summary>Symbolic name, e.g. CUDA_ERROR_OUT_OF_MEMORY.</summary>
    public string ErrorName { get; }
    public string ErrorText { get; }
    /// <summary>The failing call expression as written at the call site.</summary>
    public string? Call { get; }

    public CudaException(string library, int code, string errorName, string errorText,
                         string? call, string? member, string? file, int line, string? context = null)
        : base(Format(library, code, errorName, errorText, call, member, file, line, context))
    {
        Library = library; Code = code; ErrorName = errorName; ErrorText = errorText; Call = call;
    }

    /// <summary>The message layout, kept in one place so tests can check it without a GPU.</summary>
    public static string Format(string library, int code, string errorName, string errorText,
                                string? call, string? member, string? file, int line, string? context = null)
    {
        var where = file is null ? "" : $" ({Path.GetFileName(file)}:{line})";
        var msg = $"{library} error {errorName} ({code}): {errorText}\n  in {call ?? "?"} at {member ?? "?"}{where}";
        if (!string.IsNullOrEmpty(context)) msg += "\n  " + context;
        return msg;
    }
}

/// <summary>An out-of-memory failure from the device allocator (lets the caching allocator flush and retry).</summary>
public sealed class CudaOutOfMemoryException : CudaException
{
    public CudaOutOfMemoryException(string library, int code, string errorName, string errorText,
                                    string? call, string? member, string? file, int line, string? context = null)
        : base(library, code, errorName, errorText, call, member, file, line, context) { }
}
