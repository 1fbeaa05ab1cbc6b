using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Autograd;

[TestClass]
public sealed class TensorScopeTests
{
    [TestMethod]
    public void ReleasesWhatItAllocatedAndNothingElse()
    {
        var be = Backend.Cpu;
        using var outside = be.Zeros([4], DType.F32);
        Tensor temp, kept, view, lasting;
        using (var scope = new TensorScope())
        {
            temp = be.Zeros([3], DType.F32);
            kept = scope.Keep(be.Zeros([2], DType.F32));
            view = outside.Reshape(2, 2); // shares the outer storage: not the scope's to free
            using (TensorScope.Suspend()) lasting = be.Zeros([5], DType.F32);
        }
        Assert.IsTrue(temp.Storage.IsDisposed);
        Assert.IsFalse(kept.Storage.IsDisposed);
        Assert.IsFalse(outside.Storage.IsDisposed);
        Assert.IsFalse(view.Storage.IsDisposed);
        Assert.IsFalse(lasting.Storage.IsDisposed);
        kept.Dispose(); lasting.Dispose();
    }

    [TestMethod]
    public void KeepHandsTheTensorToTheEnclosingScope()
    {
        var be = Backend.Cpu;
        Tensor t;
        using (new TensorScope())
        {
            using (var inner = new TensorScope()) t = inner.Keep(be.Zeros([1], DType.F32));
            Assert.IsFalse(t.Storage.IsDisposed);
        }
        Assert.IsTrue(t.Storage.IsDisposed, "the outer scope owns it after Keep");
    }

    [TestMethod]
    public void OutOfOrderDisposeIsAnError()
    {
        var outer = new TensorScope();
        var inner = new TensorScope();
        Assert.ThrowsExactly<InvalidOperationException>(() => outer.Dispose());
        inner.Dispose(); outer.Dispose();
    }
}
