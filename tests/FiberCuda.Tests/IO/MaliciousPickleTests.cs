using FiberCuda.IO;

namespace FiberCuda.Tests.IO;

[TestClass]
public sealed class MaliciousPickleTests
{
    const string Marker = "/tmp/fibercuda_pickle_marker_";

    [TestMethod]
    [DataRow("evil_os_system.pkl", "posix.system", "os_system")]      // Python pickles os.system as posix.system
    [DataRow("evil_os_system.pt", "posix.system", "os_system")]
    [DataRow("evil_posix_system.pkl", "posix.system", "posix_system")]
    [DataRow("evil_posix_system.pt", "posix.system", "posix_system")]
    [DataRow("evil_builtins_eval.pkl", "builtins.eval", "builtins_eval")]
    [DataRow("evil_builtins_eval.pt", "builtins.eval", "builtins_eval")]
    [DataRow("evil_builtins_exec.pkl", "builtins.exec", "builtins_exec")]
    [DataRow("evil_builtins_exec.pt", "builtins.exec", "builtins_exec")]
    [DataRow("evil_subprocess_popen.pkl", "subprocess.Popen", "subprocess_popen")]
    [DataRow("evil_subprocess_popen.pt", "subprocess.Popen", "subprocess_popen")]
    [DataRow("evil_chain.pkl", "builtins.__import__", "chain")]
    [DataRow("evil_stack_global.pkl", "os.system", "stack_global")]
    public void RefusedByNameAndNothingRuns(string file, string global, string marker)
    {
        File.Delete(Marker + marker);
        var e = Assert.ThrowsExactly<UnsafePickleException>(() => WeightFiles.Open(Fixture.P(file)).Dispose());
        Assert.AreEqual(global, e.Global);
        StringAssert.Contains(e.Message, global);
        StringAssert.Contains(e.Message, file);
        Assert.IsFalse(File.Exists(Marker + marker), "the payload must not have run");
    }

    [TestMethod]
    public void CallingTheResultOfACallIsRefused()
    {
        // mymodule.factory() is an unknown class: it becomes an inert placeholder; calling that placeholder is refused.
        var e = Assert.ThrowsExactly<UnsafePickleException>(() => WeightFiles.Open(Fixture.P("evil_call_result.pkl")).Dispose());
        StringAssert.Contains(e.Message, "mymodule.factory");
    }

    [TestMethod]
    public void UnknownClassBecomesPlaceholderAndGlobalAloneIsInert()
    {
        // (argparse.Namespace, ) + () REDUCE, then a bare reference to os.system that is never called.
        byte[] p = [0x80, 2, .. "cargparse\nNamespace\n)R"u8, .. "cos\nsystem\n"u8, 0x86, (byte)'.'];
        var r = (PyTuple)Pickle.Load(p, "test")!;
        Assert.AreEqual("argparse.Namespace", ((PyObject)r[0]!).Type.FullName);
        Assert.AreEqual(new PyGlobal("os", "system"), r[1]);
    }

    [TestMethod]
    public void DangerousGlobalsViaEveryCallingOpcode()
    {
        var cases = new (string Name, byte[] Bytes)[]
        {
            ("REDUCE", [0x80, 2, .. "cos\nsystem\n"u8, .. "X\x02\x00\x00\x00ls"u8, 0x85, (byte)'R', (byte)'.']),
            ("NEWOBJ", [0x80, 2, .. "csubprocess\nPopen\n"u8, (byte)')', 0x81, (byte)'.']),
            ("INST", [.. "(S'ls'\nios\nsystem\n."u8]),
            ("OBJ", [.. "(cos\nsystem\nS'ls'\no."u8]),
            ("BUILD on a global", [0x80, 2, .. "cos\nsystem\n}b."u8]),
            ("EXT1", [0x80, 2, 0x82, 1, (byte)'.']),
        };
        foreach (var (name, bytes) in cases)
            Assert.ThrowsExactly<UnsafePickleException>(() => Pickle.Load(bytes, name), name);
    }
}

[TestClass]
public sealed class BenignMetadataTests
{
    [TestMethod]
    public void HarmlessValueClassesAreInert()
    {
        // pathlib.PosixPath('/data') and functools.partial(torch.optim.AdamW, lr=1) style values in hyper-parameters.
        byte[] p = [0x80, 2, .. "cpathlib\nPosixPath\nX\x05\x00\x00\x00/data"u8, 0x85, (byte)'R',
            .. "cfunctools\npartial\ncargparse\nNamespace\n"u8, 0x85, (byte)'R', 0x86, (byte)'.'];
        var r = (PyTuple)Pickle.Load(p, "test")!;
        Assert.AreEqual("pathlib.PosixPath", ((PyObject)r[0]!).Type.FullName);
        Assert.AreEqual("functools.partial", ((PyObject)r[1]!).Type.FullName);
    }
}
