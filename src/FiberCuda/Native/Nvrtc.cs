using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FiberCuda.Native;

/// <summary>NVRTC (nvrtc.h) via function pointers. nvrtcResult = int, nvrtcProgram = nint, size_t = nuint.</summary>
public static unsafe class Nvrtc
{
    public const int NVRTC_SUCCESS = 0;
    public const int NVRTC_ERROR_INVALID_OPTION = 5;
    public const int NVRTC_ERROR_COMPILATION = 6;

    const string Lib = "nvrtc";
    static readonly object Gate = new();
    static volatile bool _loaded;

#pragma warning disable CS0649
    public static delegate* unmanaged[Cdecl]<int, byte*> nvrtcGetErrorString;
    public static delegate* unmanaged[Cdecl]<int*, int*, int> nvrtcVersion;
    /// <summary>NVRTC 11.2+; null on older ones.</summary>
    public static delegate* unmanaged[Cdecl]<int*, int> nvrtcGetNumSupportedArchs;
    public static delegate* unmanaged[Cdecl]<int*, int> nvrtcGetSupportedArchs;
    /// <summary>(prog*, src, name, numHeaders, headers, includeNames)</summary>
    public static delegate* unmanaged[Cdecl]<nint*, byte*, byte*, int, byte**, byte**, int> nvrtcCreateProgram;
    public static delegate* unmanaged[Cdecl]<nint*, int> nvrtcDestroyProgram;
    public static delegate* unmanaged[Cdecl]<nint, int, byte**, int> nvrtcCompileProgram;
    public static delegate* unmanaged[Cdecl]<nint, nuint*, int> nvrtcGetProgramLogSize;
    public static delegate* unmanaged[Cdecl]<nint, byte*, int> nvrtcGetProgramLog;
    public static delegate* unmanaged[Cdecl]<nint, nuint*, int> nvrtcGetPTXSize;
    public static delegate* unmanaged[Cdecl]<nint, byte*, int> nvrtcGetPTX;
    /// <summary>NVRTC 11.1+; null on older ones.</summary>
    public static delegate* unmanaged[Cdecl]<nint, nuint*, int> nvrtcGetCUBINSize;
    public static delegate* unmanaged[Cdecl]<nint, byte*, int> nvrtcGetCUBIN;
#pragma warning restore CS0649

    public static string? LibraryPath => CudaLibraryResolver.LoadedPath(Lib);

    public static void Load()
    {
        if (_loaded) return;
        lock (Gate)
        {
            if (_loaded) return;
            var h = CudaLibraryResolver.Load(Lib);
            nint S(string name) => CudaLibraryResolver.Export(Lib, h, name);
            nvrtcGetErrorString = (delegate* unmanaged[Cdecl]<int, byte*>)S("nvrtcGetErrorString");
            nvrtcVersion = (delegate* unmanaged[Cdecl]<int*, int*, int>)S("nvrtcVersion");
            nvrtcGetNumSupportedArchs = (delegate* unmanaged[Cdecl]<int*, int>)CudaLibraryResolver.TryExport(h, "nvrtcGetNumSupportedArchs");
            nvrtcGetSupportedArchs = (delegate* unmanaged[Cdecl]<int*, int>)CudaLibraryResolver.TryExport(h, "nvrtcGetSupportedArchs");
            nvrtcCreateProgram = (delegate* unmanaged[Cdecl]<nint*, byte*, byte*, int, byte**, byte**, int>)S("nvrtcCreateProgram");
            nvrtcDestroyProgram = (delegate* unmanaged[Cdecl]<nint*, int>)S("nvrtcDestroyProgram");
            nvrtcCompileProgram = (delegate* unmanaged[Cdecl]<nint, int, byte**, int>)S("nvrtcCompileProgram");
            nvrtcGetProgramLogSize = (delegate* unmanaged[Cdecl]<nint, nuint*, int>)S("nvrtcGetProgramLogSize");
            nvrtcGetProgramLog = (delegate* unmanaged[Cdecl]<nint, byte*, int>)S("nvrtcGetProgramLog");
            nvrtcGetPTXSize = (delegate* unmanaged[Cdecl]<nint, nuint*, int>)S("nvrtcGetPTXSize");
            nvrtcGetPTX = (delegate* unmanaged[Cdecl]<nint, byte*, int>)S("nvrtcGetPTX");
            nvrtcGetCUBINSize = (delegate* unmanaged[Cdecl]<nint, nuint*, int>)CudaLibraryResolver.TryExport(h, "nvrtcGetCUBINSize");
            nvrtcGetCUBIN = (delegate* unmanaged[Cdecl]<nint, byte*, int>)CudaLibraryResolver.TryExport(h, "nvrtcGetCUBIN");
            _loaded = true;
        }
    }

    public static string ErrorString(int code)
    {
        if (_loaded)
        {
            var s = nvrtcGetErrorString(code);
            if (s != null) return Marshal.PtrToStringUTF8((nint)s) ?? "?";
        }
        return code switch
        {
            0 => "NVRTC_SUCCESS", 1 => "NVRTC_ERROR_OUT_OF_MEMORY", 2 => "NVRTC_ERROR_PROGRAM_CREATION_FAILURE",
            3 => "NVRTC_ERROR_INVALID_INPUT", 4 => "NVRTC_ERROR_INVALID_PROGRAM", 5 => "NVRTC_ERROR_INVALID_OPTION",
            6 => "NVRTC_ERROR_COMPILATION", 7 => "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE",
            11 => "NVRTC_ERROR_INTERNAL_ERROR", _ => $"nvrtcResult {code}",
        };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Check(int result, string? context = null,
        [CallerArgumentExpression(nameof(result))] string? call = null,
        [CallerMemberName] string? member = null, [CallerFilePath] string? file = null, [CallerLineNumber] int line = 0)
    {
        if (result != NVRTC_SUCCESS)
        {
            // nvrtcGetErrorString returns the enum's name ("NVRTC_ERROR_COMPILATION"), which is all NVRTC offers.
            var name = ErrorString(result);
            throw new CudaException("NVRTC", result, name, name, call, member, file, line, context);
        }
    }

    /// <summary>(major, minor) of the loaded NVRTC.</summary>
    public static (int Major, int Minor) Version()
    {
        Load();
        int major, minor;
        Check(nvrtcVersion(&major, &minor));
        return (major, minor);
    }

    /// <summary>SM numbers (e.g. 80, 90) this NVRTC can emit CUBIN for; empty when it cannot say (pre-11.2).</summary>
    public static int[] SupportedArchs()
    {
        Load();
        if (nvrtcGetNumSupportedArchs == null || nvrtcGetSupportedArchs == null) return [];
        int n;
        Check(nvrtcGetNumSupportedArchs(&n));
        var a = new int[n];
        fixed (int* p = a) Check(nvrtcGetSupportedArchs(p));
        return a;
    }
}
