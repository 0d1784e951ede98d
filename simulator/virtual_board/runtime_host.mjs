// One virtual board's MicroPython interpreter: the real WebAssembly runtime (pinned in
// package.json), kept alive across executions so globals persist like on a real board.
//
// Channel (designed for runtime.py, nothing else talks to it):
//   commands  Python -> Node: JSON lines on the fd given by --cmd-fd
//     {"op":"exec","id":N,"code":"<base64 utf-8>","mode":"raw"|"single"|"file","filename":"boot.py"}
//     {"op":"reset"}   fresh interpreter (soft reset), filesystem reloaded from the host folder
//     {"op":"quit"}
//   events    Node -> Python: JSON lines on stdout
//     {"ev":"ready"}                                  after start and after each reset
//     {"ev":"out","data":"<base64>"}                  program output, streamed line by line
//     {"ev":"done","id":N,"error":<traceback|null>,"exc":<type|null>,"reset":<"soft"|"hard"|null>,
//      "fatal":<bool>}
//   interrupt Python -> Node: the exec id (u32 LE) on stdin (a non-blocking pipe). The runtime has no VM
//     hook, so stdin is polled whenever the program prints or reads the clock (time.sleep,
//     ticks_ms); a tight loop that does neither cannot be interrupted here (runtime.py then
//     restarts the process).
//
// The board's flash is an in-memory Emscripten MEMFS tree at /flash (the runtime has no NODEFS),
// loaded from the host folder at start/reset and written back after every execution: files
// added, changed and removed. MicroPython sees /flash mounted at "/" exactly like littlefs on
// an ESP32 (see _vboard_platform.py).
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
import net from "node:net";
import readline from "node:readline";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? acc.concat([[a.slice(2), all[i + 1]]]) : acc), []),
);
const HOST_DIR = path.resolve(args.fs);
const SHIM_DIR = path.resolve(args.shim);
const HEAP = parseInt(args.heap || String(2 * 1024 * 1024), 10);
const UID = args.uid || "000000000000";
const CMD_FD = parseInt(args["cmd-fd"], 10);

let mp = null;
let snapshot = new Map(); // board-relative path -> Buffer (file) | null (directory), as last synced
let outBuf = [];
let resetRequest = null;
let currentSrc = "";
let currentFilename = "<stdin>";

function emit(obj) {
  fs.writeSync(1, JSON.stringify(obj) + "\n");
}

function flushOut() {
  if (outBuf.length === 0) return;
  emit({ ev: "out", data: Buffer.from(outBuf).toString("base64") });
  outBuf = [];
}

// --- interrupt (Ctrl-C) polling -------------------------------------------------------------
const realNow = Date.now.bind(Date);
let lastPoll = 0;
const pollBuf = Buffer.alloc(64);
let tokenCarry = Buffer.alloc(0);
let currentExecId = null;
function pollInterrupt() {
  if (!mp) return;
  for (;;) {
    let n = 0;
    try {
      n = fs.readSync(0, pollBuf, 0, pollBuf.length, null);
    } catch (e) {
      if (e.code !== "EAGAIN" && e.code !== "EWOULDBLOCK") throw e;
      return;
    }
    if (n <= 0) return;
    tokenCarry = Buffer.concat([tokenCarry, pollBuf.subarray(0, n)]);
    while (tokenCarry.length >= 4) {
      // Each Ctrl-C is the id of the execution it was meant for; stale ones are dropped.
      if (tokenCarry.readUInt32LE(0) === currentExecId) mp._module._mp_sched_keyboard_interrupt();
      tokenCarry = tokenCarry.subarray(4);
    }
  }
}
// The runtime reads the clock through Date.now (ticks_ms, time.sleep's busy wait).
Date.now = () => {
  const t = realNow();
  if (t - lastPoll >= 20) {
    lastPoll = t;
    pollInterrupt();
  }
  return t;
};

function onOutByte(b) {
  const c = b[0];
  outBuf.push(c);
  if (c === 10 || outBuf.length >= 512) {
    flushOut();
    pollInterrupt();
  }
}

// --- filesystem: host folder <-> /flash ------------------------------------------------------
function readHostTree(dir, rel, out) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    const r = rel ? rel + "/" + entry.name : entry.name;
    let st;
    try {
      st = fs.statSync(full);
    } catch {
      continue; // dangling symlink: nothing to load
    }
    if (st.isDirectory()) {
      out.set(r, null);
      readHostTree(full, r, out);
    } else if (st.isFile()) {
      out.set(r, fs.readFileSync(full));
    }
  }
  return out;
}

function readBoardTree(dir, rel, out) {
  for (const name of mp.FS.readdir(dir)) {
    if (name === "." || name === "..") continue;
    const full = dir + "/" + name;
    const r = rel ? rel + "/" + name : name;
    const st = mp.FS.stat(full);
    if (mp.FS.isDir(st.mode)) {
      out.set(r, null);
      readBoardTree(full, r, out);
    } else if (mp.FS.isFile(st.mode)) {
      out.set(r, Buffer.from(mp.FS.readFile(full)));
    }
  }
  return out;
}

function loadFlash() {
  const tree = readHostTree(HOST_DIR, "", new Map());
  mp.FS.mkdirTree("/flash");
  for (const [rel, data] of tree) {
    if (data === null) mp.FS.mkdirTree("/flash/" + rel);
    else mp.FS.writeFile("/flash/" + rel, data);
  }
  snapshot = tree;
}

const depth = (p) => p.split("/").length;

// Write board changes back to the host folder so they survive stop/restart.
function syncFlash() {
  const cur = readBoardTree("/flash", "", new Map());
  const removed = [...snapshot.keys()].filter((p) => !cur.has(p) || (cur.get(p) === null) !== (snapshot.get(p) === null));
  removed.sort((a, b) => depth(b) - depth(a));
  for (const p of removed) {
    fs.rmSync(path.join(HOST_DIR, p), { recursive: true, force: true });
  }
  const added = [...cur.keys()].sort((a, b) => depth(a) - depth(b));
  for (const p of added) {
    const data = cur.get(p);
    const prev = snapshot.has(p) && !removed.includes(p) ? snapshot.get(p) : undefined;
    const host = path.join(HOST_DIR, p);
    if (data === null) {
      if (prev === undefined) fs.mkdirSync(host, { recursive: true });
    } else if (prev === undefined || !prev.equals(data)) {
      fs.mkdirSync(path.dirname(host), { recursive: true });
      fs.writeFileSync(host, data);
    }
  }
  snapshot = cur;
}

// --- interpreter lifecycle --------------------------------------------------------------------
function copyShims() {
  mp.FS.mkdirTree("/vboard");
  for (const name of fs.readdirSync(SHIM_DIR)) {
    if (name.endsWith(".py")) mp.FS.writeFile("/vboard/" + name, fs.readFileSync(path.join(SHIM_DIR, name)));
  }
}

async function boot() {
  mp = null;
  outBuf = [];
  const fresh = await loadMicroPython({ heapsize: HEAP, linebuffer: false, stdout: onOutByte, stderr: onOutByte });
  mp = fresh;
  loadFlash();
  copyShims();
  mp.registerJsModule("_vboard", {
    uid: UID,
    request_reset: (kind) => {
      resetRequest = String(kind);
    },
    src: () => currentSrc,
    filename: () => currentFilename,
  });
  // Platform set-up runs while the Emscripten root is still mounted, then remounts /flash at "/".
  mp.runPython("import sys\nsys.path.append('/vboard')\nimport _vboard_platform\n_vboard_platform.install()\ndel _vboard_platform\ndel sys");
  flushOut();
}

// Strip the one wrapper frame that exec(compile(...)) adds, so tracebacks read as on a board.
function stripWrapperFrame(tb) {
  return tb.replace(/^(Traceback \(most recent call last\):\n)  File "<stdin>", line 1, in <module>\n/, "$1");
}

function execute(cmd) {
  const src = Buffer.from(cmd.code, "base64").toString("utf8");
  resetRequest = null;
  currentExecId = cmd.id;
  pollInterrupt(); // a Ctrl-C that arrived just before execution began
  let error = null;
  let exc = null;
  let fatal = false;
  try {
    if (cmd.mode === "raw") {
      mp.runPython(src);
    } else {
      currentSrc = src;
      currentFilename = cmd.filename || "<stdin>";
      const kind = cmd.mode === "single" ? "single" : "exec";
      mp.runPython(`exec(compile(__import__('_vboard').src(), __import__('_vboard').filename(), '${kind}'))`);
    }
  } catch (e) {
    if (e && e.name === "PythonError") {
      exc = e.type;
      if (e.type !== "SystemExit" && e.type !== "VirtualBoardReset") {
        error = cmd.mode === "raw" ? e.message : stripWrapperFrame(e.message);
      }
    } else {
      // The runtime itself failed (e.g. wasm abort): the interpreter is unusable.
      fatal = true;
      exc = "fatal";
      error = "virtual board: runtime crashed: " + String(e && e.message ? e.message : e) + "\n";
    }
  } finally {
    currentSrc = "";
    currentExecId = null;
  }
  flushOut();
  let syncError = null;
  if (!fatal) {
    try {
      syncFlash();
    } catch (e) {
      syncError = String(e && e.message ? e.message : e);
    }
  }
  emit({ ev: "done", id: cmd.id, error, exc, reset: resetRequest, fatal, sync_error: syncError });
}

await boot();
emit({ ev: "ready" });

// A socket, not fs.createReadStream: a threadpool read blocked on the pipe would stop
// process.exit from returning.
const rl = readline.createInterface({ input: new net.Socket({ fd: CMD_FD, readable: true, writable: false }) });
for await (const line of rl) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  if (cmd.op === "exec") {
    execute(cmd);
  } else if (cmd.op === "reset") {
    try {
      syncFlash();
    } catch {
      // the host folder is reloaded below either way
    }
    await boot();
    emit({ ev: "ready" });
  } else if (cmd.op === "quit") {
    try {
      syncFlash();
    } catch {
      // exiting anyway
    }
    process.exit(0);
  }
}
process.exit(0);
