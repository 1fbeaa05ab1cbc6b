using FiberCuda.IO;

namespace FiberCuda.Cli.Commands;

/// <summary>Exit codes shared by the commands, and the one place that turns exceptions into messages.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>Bad arguments (also what System.CommandLine returns for parse errors).</summary>
    public const int Usage = 1;
    /// <summary>An input is missing, unreadable or corrupt.</summary>
    public const int BadInput = 2;
    /// <summary>The inputs do not fit the model: shape mismatch, missing or unexpected tensors.</summary>
    public const int Mismatch = 3;
    /// <summary>A pickle tried to call something outside the allow-list.</summary>
    public const int Unsafe = 4;
    /// <summary>The requested device (GPU, emulator) cannot be opened.</summary>
    public const int Device = 5;
    /// <summary>Training stopped after repeated non-finite losses or gradients (the last good checkpoint is intact).</summary>
    public const int Diverged = 6;

    public static int Run(Func<int> body)
    {
        try { return body(); }
        catch (Training.TrainingDivergedException e) { return Fail(Diverged, e.Message); }
        catch (UnsafePickleException e) { return Fail(Unsafe, e.Message); }
        catch (InputMismatchException e) { return Fail(Mismatch, e.Message); }
        catch (DeviceUnavailableException e) { return Fail(Device, e.Message); }
        catch (ConvertMismatchException e) { return Fail(Mismatch, e.Message); }
        catch (WeightLoadException e) { return Fail(Mismatch, e.Message); }
        catch (FileNotFoundException e) { return Fail(BadInput, e.Message); }
        catch (DirectoryNotFoundException e) { return Fail(BadInput, e.Message); }
        catch (WeightFormatException e) { return Fail(BadInput, e.Message); }
        catch (EndOfStreamException e) { return Fail(BadInput, "unexpected end of file: " + e.Message); }
        catch (UnauthorizedAccessException e) { return Fail(BadInput, e.Message); }
        catch (ArgumentException e) { return Fail(Usage, e.Message); }
        catch (IOException e) { return Fail(BadInput, e.Message); }
    }

    static int Fail(int code, string msg)
    {
        Console.Error.WriteLine("fiber: error: " + msg);
        return code;
    }
}

/// <summary>A readable input that does not fit the model or the command: a missing tensor, a wrong dtype or shape, a config clash.</summary>
public sealed class InputMismatchException(string message) : Exception(message);

/// <summary>The device asked for is not there (no GPU, no driver, no g++ for the emulator).</summary>
public sealed class DeviceUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
