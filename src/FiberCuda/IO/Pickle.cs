using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace FiberCuda.IO;

// Python values as the unpickler builds them. Plain CLR types where one fits: null (None), bool, long / BigInteger
// (int), double (float), string (str), byte[] (bytes). Containers and foreign objects get these classes.

public sealed class PyTuple(object?[] items)
{
    public object?[] Items { get; } = items;
    public int Count => Items.Length;
    public object? this[int i] => Items[i];
    public override string ToString() => "(" + string.Join(", ", Items.Select(Pickle.Repr)) + (Items.Length == 1 ? ",)" : ")");
}

public sealed class PyList : List<object?>
{
    public override string ToString() => "[" + string.Join(", ", this.Select(Pickle.Repr)) + "]";
}

public sealed class PySet : List<object?> { public bool Frozen { get; init; } }

/// <summary>An insertion-ordered dict (Python dicts keep order; OrderedDict is the same thing here).</summary>
public sealed class PyDict
{
    readonly List<KeyValuePair<object?, object?>> _items = [];
    readonly Dictionary<object, int> _index = new();

    public bool IsOrderedDict { get; init; }
    /// <summary>State applied by BUILD (an OrderedDict state_dict's `_metadata`), kept but not interpreted.</summary>
    public object? State { get; set; }
    public int Count => _items.Count;
    public IReadOnlyList<KeyValuePair<object?, object?>> Items => _items;

    static object Key(object? k) => k switch
    {
        null => NoneKey.Instance,
        int i => (long)i,
        _ => k is string or long or bool or double or BigInteger ? k : new RefKey(k),
    };

    public void Set(object? k, object? v)
    {
        var key = Key(k);
        if (_index.TryGetValue(key, out int i)) _items[i] = new(k, v);
        else { _index[key] = _items.Count; _items.Add(new(k, v)); }
    }

    public bool TryGet(object? k, out object? v)
    {
        if (_index.TryGetValue(Key(k), out int i)) { v = _items[i].Value; return true; }
        v = null; return false;
    }

    public object? this[string k] => TryGet(k, out var v) ? v : throw new KeyNotFoundException(k);

    sealed class NoneKey { public static readonly NoneKey Instance = new(); }
    sealed record RefKey(object Target)
    {
        public bool Equals(RefKey? o) => o is not null && ReferenceEquals(Target, o.Target);
        public override int GetHashCode() => System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(Target);
    }
}

/// <summary>A module-level name the pickle referred to. Only allow-listed ones ever mean anything.</summary>
public sealed record PyGlobal(string Module, string Name)
{
    public string FullName => Module + "." + Name;
    public override string ToString() => FullName;
}

/// <summary>An inert stand-in for an instance of a class the reader does not know (argparse.Namespace, numpy scalars,
/// Lightning AttributeDict...). Nothing about it is executed; its arguments and state are kept for display.</summary>
public sealed class PyObject(PyGlobal type, object? args)
{
    public PyGlobal Type { get; } = type;
    public object? Args { get; } = args;
    public object? State { get; set; }
    public override string ToString() => $"<{Type.FullName}>";
}

/// <summary>
/// A whitelisting unpickler for protocols 0–5 (anchors.md §C2). It never imports or calls anything: GLOBAL only
/// produces a <see cref="PyGlobal"/> name, and REDUCE/NEWOBJ/INST/OBJ on a name go through <see cref="Call"/>,
/// which knows the containers and (via <see cref="Resolver"/>) the torch rebuild functions, refuses dangerous
/// modules (os, posix, subprocess, builtins, ...) by name, and turns any other class into an inert
/// <see cref="PyObject"/>. Calling something that is not a plain global (a nested reduce chain) is refused.
/// </summary>
public sealed class Pickle
{
    /// <summary>Handles a call of an allow-listed global; returns false to fall back to the default policy.</summary>
    public delegate bool CallResolver(PyGlobal g, object?[] args, out object? result);

    readonly Stream _s;
    readonly string _where;
    readonly List<object?> _stack = [];
    readonly List<int> _marks = [];
    readonly Dictionary<long, object?> _memo = new();
    const int MaxMemo = 10_000_000;

    public Func<object?, object?>? PersistentLoad { get; init; }
    public CallResolver? Resolver { get; init; }

    public Pickle(Stream s, string where) { _s = s; _where = where; }

    public static object? Load(byte[] data, string where, Func<object?, object?>? persistentLoad = null, CallResolver? resolver = null)
        => new Pickle(new MemoryStream(data, false), where) { PersistentLoad = persistentLoad, Resolver = resolver }.Load();

    // Modules whose callables can run code, touch the system or build arbitrary calls; refused by name. Harmless
    // value classes that real checkpoints carry in their hyper-parameters (pathlib.PosixPath, functools.partial of
    // an optimizer, ...) are not listed: like every unknown class they become inert placeholders.
    static readonly HashSet<string> DangerousModules =
    [
        "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "__builtins__", "shutil", "socket", "importlib",
        "runpy", "pty", "code", "codeop", "pickle", "_pickle", "cPickle", "marshal", "ctypes", "multiprocessing", "signal",
        "webbrowser", "types", "io", "_io", "tempfile", "asyncio",
        "threading", "_thread", "posixpath", "ntpath", "commands", "popen2", "pdb", "timeit", "inspect", "gc", "zipimport",
        "pkgutil", "site", "sysconfig", "distutils", "setuptools", "pip", "torch.hub", "torch.jit", "torch._ops",
        "torch.ops", "torch.package", "torch.utils.cpp_extension", "torch.cuda", "torch.load", "dill", "numpy.testing",
        "numpy.f2py", "numpy.distutils", "nt", "requests", "urllib", "http", "ftplib", "smtplib", "telnetlib",
    ];
    static readonly HashSet<string> DangerousNames =
        ["eval", "exec", "execfile", "compile", "system", "popen", "spawn", "__import__", "getattr", "setattr", "delattr",
         "open", "apply", "input", "globals", "locals", "vars", "breakpoint", "load", "loads", "call", "check_output",
         "check_call", "run", "Popen", "execv", "execve", "execl", "fork", "remove", "unlink", "rmtree", "attrgetter",
         "methodcaller", "_reconstructor_unsafe", "import_module", "reload", "__reduce__", "__reduce_ex__"];

    public static bool IsDangerous(PyGlobal g)
    {
        if (DangerousNames.Contains(g.Name)) return true;
        string m = g.Module;
        while (true)
        {
            if (DangerousModules.Contains(m)) return true;
            int dot = m.LastIndexOf('.');
            if (dot < 0) return false;
            m = m[..dot];
        }
    }

    object? Call(object? callable, object?[] args)
    {
        if (callable is not PyGlobal g)
            throw new UnsafePickleException($"a call of a computed object ({Repr(callable)})", _where);
        if (IsDangerous(g)) throw new UnsafePickleException(g.FullName, _where);
        if (Resolver is not null && Resolver(g, args, out var r)) return r;
        switch (g.FullName)
        {
            case "collections.OrderedDict":
                {
                    var d = new PyDict { IsOrderedDict = true };
                    if (args.Length > 0 && args[0] is PyList pairs)
                        foreach (var p in pairs) if (p is PyTuple { Count: 2 } t) d.Set(t[0], t[1]);
                    return d;
                }
            case "_codecs.encode":
                // Protocol 2 writes bytes as _codecs.encode(str, 'latin1').
                if (args.Length >= 1 && args[0] is string str)
                    return args.Length < 2 || args[1] is "latin1" or "latin-1" ? Encoding.Latin1.GetBytes(str) : Encoding.UTF8.GetBytes(str);
                break;
            case "copyreg._reconstructor":
                if (args.Length >= 1 && args[0] is PyGlobal cls)
                {
                    foreach (var a in args) if (a is PyGlobal pg && IsDangerous(pg)) throw new UnsafePickleException(pg.FullName, _where);
                    return new PyObject(cls, new PyTuple(args));
                }
                break;
            case "copyreg.__newobj__":
                if (args.Length >= 1 && args[0] is PyGlobal c2) return new PyObject(c2, new PyTuple(args[1..]));
                break;
        }
        return new PyObject(g, new PyTuple(args));
    }

    public object? Load()
    {
        while (true)
        {
            int op = _s.ReadByte();
            if (op < 0) throw Bad("truncated pickle (no STOP)");
            switch (op)
            {
                case 0x80: ReadByte(); break;                                   // PROTO
                case 0x95: ReadU64(); break;                                    // FRAME (framing is advisory)
                case '.': return _stack.Count == 1 ? Pop() : throw Bad($"STOP with {_stack.Count} items on the stack");
                case '(': _marks.Add(_stack.Count); break;                      // MARK
                case '0': Pop(); break;                                         // POP
                case '1': PopMark(); break;                                     // POP_MARK
                case '2': Push(Peek()); break;                                  // DUP
                case 'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case 'I':                                                       // INT (text; "01"/"00" are bools)
                    {
                        var t = ReadLine();
                        if (t == "01") Push(true); else if (t == "00") Push(false); else Push(ParseInt(t));
                        break;
                    }
                case 'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(ReadN(4))); break;
                case 'K': Push((long)ReadByte()); break;
                case 'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadN(2))); break;
                case 'L': Push(ParseInt(ReadLine().TrimEnd('L'))); break;
                case 0x8a: Push(LongFromBytes(ReadN(ReadByte()))); break;      // LONG1
                case 0x8b: Push(LongFromBytes(ReadN(ReadLen4()))); break;      // LONG4
                case 'F':
                    {
                        var t = ReadLine();
                        Push(double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) ? f : throw Bad($"bad float '{t}'"));
                        break;
                    }
                case 'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadN(8))); break;
                case 'S': Push(UnquoteString(ReadLine())); break;              // STRING (protocol 0 str)
                case 'T': Push(Encoding.Latin1.GetString(ReadN(ReadLen4()))); break; // BINSTRING
                case 'U': Push(Encoding.Latin1.GetString(ReadN(ReadByte()))); break; // SHORT_BINSTRING
                case 'V': Push(Regex.Unescape(ReadLine())); break;             // UNICODE (raw-unicode-escape, close enough)
                case 'X': Push(Utf8(ReadN(ReadLen4()))); break;
                case 0x8c: Push(Utf8(ReadN(ReadByte()))); break;
                case 0x8d: Push(Utf8(ReadN(ReadLen8()))); break;
                case 'B': Push(ReadN(ReadLen4())); break;
                case 'C': Push(ReadN(ReadByte())); break;
                case 0x8e: Push(ReadN(ReadLen8())); break;
                case 0x96: Push(ReadN(ReadLen8())); break;                      // BYTEARRAY8
                case ')': Push(new PyTuple([])); break;
                case 't': Push(new PyTuple(PopMark())); break;
                case 0x85: Push(new PyTuple([Pop()])); break;
                case 0x86: { var b = Pop(); var a = Pop(); Push(new PyTuple([a, b])); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new PyTuple([a, b, c])); break; }
                case ']': Push(new PyList()); break;
                case 'l': { var l = new PyList(); l.AddRange(PopMark()); Push(l); break; }
                case 'a': { var v = Pop(); AsList(Peek()).Add(v); break; }
                case 'e': { var items = PopMark(); AsList(Peek()).AddRange(items); break; }
                case '}': Push(new PyDict()); break;
                case 'd': { var items = PopMark(); var d = new PyDict(); SetItems(d, items); Push(d); break; }
                case 's': { var v = Pop(); var k = Pop(); AsDict(Peek()).Set(k, v); break; }
                case 'u': { var items = PopMark(); SetItems(AsDict(Peek()), items); break; }
                case 0x8f: Push(new PySet()); break;                             // EMPTY_SET
                case 0x90:                                                       // ADDITEMS
                    {
                        var items = PopMark();
                        if (Peek() is not PySet set) throw Bad("ADDITEMS on a non-set");
                        set.AddRange(items); break;
                    }
                case 0x91: { var s = new PySet { Frozen = true }; s.AddRange(PopMark()); Push(s); break; }
                case 'c':                                                        // GLOBAL
                    {
                        var mod = ReadLine(); var name = ReadLine();
                        Push(Global(mod, name)); break;
                    }
                case 0x93:                                                       // STACK_GLOBAL
                    {
                        var name = Pop() as string; var mod = Pop() as string;
                        if (name is null || mod is null) throw Bad("STACK_GLOBAL needs two strings");
                        Push(Global(mod, name)); break;
                    }
                case 'R': { var args = Pop(); var f = Pop(); Push(Call(f, ArgsOf(args))); break; }
                case 0x81: { var args = Pop(); var cls = Pop(); Push(Call(cls, ArgsOf(args))); break; }            // NEWOBJ
                case 0x92: { _ = Pop(); var args = Pop(); var cls = Pop(); Push(Call(cls, ArgsOf(args))); break; } // NEWOBJ_EX (kwargs kept out)
                case 'i': { var mod = ReadLine(); var name = ReadLine(); var args = PopMark(); Push(Call(Global(mod, name), args)); break; } // INST
                case 'o': { var items = PopMark(); if (items.Length == 0) throw Bad("OBJ without a class"); Push(Call(items[0], items[1..])); break; }
                case 'b':                                                        // BUILD
                    {
                        var state = Pop(); var obj = Peek();
                        switch (obj)
                        {
                            case PyDict d: d.State = state; break;               // OrderedDict._metadata
                            case PyObject o: o.State = state; break;
                            case PyGlobal g: throw new UnsafePickleException($"BUILD on the global {g.FullName}", _where);
                            default: if (obj is not null && !Tensorish(obj)) throw Bad($"BUILD on {Repr(obj)}"); break;
                        }
                        break;
                    }
                case 'p': Memo(ParseLong(ReadLine())); break;
                case 'q': Memo(ReadByte()); break;
                case 'r': Memo(BinaryPrimitives.ReadUInt32LittleEndian(ReadN(4))); break;
                case 0x94: Memo(_memo.Count); break;                              // MEMOIZE
                case 'g': Push(Get(ParseLong(ReadLine()))); break;
                case 'h': Push(Get(ReadByte())); break;
                case 'j': Push(Get(BinaryPrimitives.ReadUInt32LittleEndian(ReadN(4)))); break;
                case 'P': Push(Persistent(ReadLine())); break;
                case 'Q': Push(Persistent(Pop())); break;
                case 0x82 or 0x83 or 0x84: throw new UnsafePickleException("the copyreg extension registry (EXT1/2/4)", _where);
                case 0x97 or 0x98: throw Bad("out-of-band buffers (protocol 5 NEXT_BUFFER/READONLY_BUFFER) are not supported");
                default: throw Bad($"unknown opcode 0x{op:x2} at byte {_s.Position - 1}");
            }
        }
    }

    /// <summary>Objects produced by a resolver (tensors) may receive BUILD (e.g. from _rebuild_from_type_v2); ignored.</summary>
    static bool Tensorish(object o) => o is TorchTensorRef;

    object? Persistent(object? pid)
    {
        if (PersistentLoad is null) throw Bad("persistent id without a persistent loader");
        return PersistentLoad(pid);
    }

    void Memo(long i)
    {
        if (_stack.Count == 0) throw Bad("memo put on an empty stack");
        if (_memo.Count >= MaxMemo) throw Bad("memo too large");
        _memo[i] = Peek();
    }

    object? Get(long i) => _memo.TryGetValue(i, out var v) ? v : throw Bad($"memo key {i} not found");

    static object?[] ArgsOf(object? a) => a switch
    {
        PyTuple t => t.Items,
        PyList l => l.ToArray(),
        null => [],
        _ => [a],
    };

    void SetItems(PyDict d, object?[] items)
    {
        if (items.Length % 2 != 0) throw Bad("odd number of items for a dict");
        for (int i = 0; i < items.Length; i += 2) d.Set(items[i], items[i + 1]);
    }

    List<object?> AsList(object? o) => o as PyList ?? throw Bad($"APPEND on {Repr(o)}");
    PyDict AsDict(object? o) => o as PyDict ?? throw Bad($"SETITEM on {Repr(o)}");

    void Push(object? o)
    {
        if (_stack.Count > 1_000_000) throw Bad("pickle stack too deep");
        _stack.Add(o);
    }

    object? Pop()
    {
        if (_stack.Count == 0 || (_marks.Count > 0 && _stack.Count <= _marks[^1])) throw Bad("stack underflow");
        var o = _stack[^1]; _stack.RemoveAt(_stack.Count - 1); return o;
    }

    object? Peek() => _stack.Count > 0 ? _stack[^1] : throw Bad("stack underflow");

    object?[] PopMark()
    {
        if (_marks.Count == 0) throw Bad("no MARK");
        int m = _marks[^1]; _marks.RemoveAt(_marks.Count - 1);
        var items = _stack.GetRange(m, _stack.Count - m).ToArray();
        _stack.RemoveRange(m, _stack.Count - m);
        return items;
    }

    int ReadByte() { int b = _s.ReadByte(); return b < 0 ? throw Bad("truncated pickle") : b; }

    byte[] ReadN(long n)
    {
        if (n < 0 || n > _s.Length - _s.Position) throw Bad($"a {n}-byte value runs past the end of the pickle");
        var b = new byte[n];
        _s.ReadExactly(b);
        return b;
    }

    long ReadLen4() => BinaryPrimitives.ReadUInt32LittleEndian(ReadN(4));
    long ReadLen8() { ulong n = BinaryPrimitives.ReadUInt64LittleEndian(ReadN(8)); return n > long.MaxValue ? -1 : (long)n; }
    ulong ReadU64() => BinaryPrimitives.ReadUInt64LittleEndian(ReadN(8));

    string ReadLine()
    {
        var sb = new StringBuilder();
        while (true)
        {
            int b = ReadByte();
            if (b == '\n') break;
            if (sb.Length > 1 << 20) throw Bad("text line too long");
            sb.Append((char)b);
        }
        if (sb.Length > 0 && sb[^1] == '\r') sb.Length--;
        return sb.ToString();
    }

    string Utf8(byte[] b)
    {
        try { return new UTF8Encoding(false, true).GetString(b); }
        catch (DecoderFallbackException) { return Encoding.UTF8.GetString(b); } // surrogates escaped by Python: keep going
    }

    long ParseLong(string t) =>
        long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) ? v : throw Bad($"bad memo index '{t}'");

    // Python 2 module names, as protocol ≤ 2 pickles written by Python 3 spell them (_compat_pickle), so that
    // messages and the allow-list use the Python 3 names.
    static readonly Dictionary<string, string> Py2Modules = new()
    {
        ["__builtin__"] = "builtins", ["copy_reg"] = "copyreg", ["commands"] = "subprocess", ["cPickle"] = "pickle",
        ["exceptions"] = "builtins", ["UserDict"] = "collections", ["_abcoll"] = "collections.abc", ["Queue"] = "queue",
    };

    static PyGlobal Global(string mod, string name) => new(Py2Modules.GetValueOrDefault(mod, mod), name);

    object ParseInt(string t)
    {
        if (!BigInteger.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v)) throw Bad($"bad integer '{t}'");
        return v >= long.MinValue && v <= long.MaxValue ? (long)v : v;
    }

    static object LongFromBytes(byte[] b)
    {
        if (b.Length == 0) return 0L;
        var v = new BigInteger(b, isUnsigned: false, isBigEndian: false);
        return v >= long.MinValue && v <= long.MaxValue ? (long)v : v;
    }

    string UnquoteString(string t)
    {
        if (t.Length >= 2 && (t[0] == '\'' || t[0] == '"') && t[^1] == t[0]) t = t[1..^1];
        return Regex.Unescape(t);
    }

    WeightFormatException Bad(string msg) => new($"{_where}: {msg}");

    static class Regex
    {
        public static string Unescape(string s)
        {
            try { return System.Text.RegularExpressions.Regex.Unescape(s); } catch (ArgumentException) { return s; }
        }
    }

    /// <summary>Short, safe text of a value for messages and `fiber inspect`.</summary>
    public static string Repr(object? o) => o switch
    {
        null => "None",
        bool b => b ? "True" : "False",
        string s => s.Length > 80 ? $"'{s[..77]}...'" : $"'{s}'",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        byte[] b => $"b<{b.Length} bytes>",
        PyDict d => $"{{{d.Count} items}}",
        PyList l => $"[{l.Count} items]",
        PyTuple t when t.Count <= 6 => "(" + string.Join(", ", t.Items.Select(Repr)) + ")",
        PyTuple t => $"({t.Count} items)",
        _ => o.ToString() ?? "?",
    };
}
