// Runs Python code under the real MicroPython WebAssembly runtime (pinned in package.json).
//
// Input (JSON on stdin):
//   {"dirs": {"<host dir>": "<target dir>"}, "files": {"<target path>": "<text>"},
//    "code": "<python source>", "heap": <bytes>}
// Every .py/.mpy/.json under each host dir is copied into the runtime's in-memory filesystem, so the
// code imports the repository's own modules, not copies. The code runs with runPythonAsync, so
// it may use top-level `await` (the runtime has no asyncio.run).
// Output: the program's stdout/stderr; exit status 0 when the code finished, 1 on an uncaught
// Python exception (its traceback goes to stderr).
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";

const job = JSON.parse(fs.readFileSync(0, "utf8"));
const out = [];
const mp = await loadMicroPython({
  heapsize: job.heap || 8 * 1024 * 1024,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function copyTree(src, dst) {
  mp.FS.mkdirTree(dst);
  for (const entry of fs.readdirSync(src, { withFileTypes: true })) {
    if (entry.name === "__pycache__" || entry.name.startsWith(".")) continue;
    const s = path.join(src, entry.name);
    const d = dst + "/" + entry.name;
    if (entry.isDirectory()) copyTree(s, d);
    else if (/\.(py|mpy|json)$/.test(entry.name)) mp.FS.writeFile(d, fs.readFileSync(s));
  }
}

for (const [src, dst] of Object.entries(job.dirs || {})) copyTree(src, dst);
for (const [dst, text] of Object.entries(job.files || {})) {
  mp.FS.mkdirTree(path.posix.dirname(dst));
  mp.FS.writeFile(dst, text);
}

try {
  await mp.runPythonAsync(job.code);
  process.exitCode = 0;
} catch (err) {
  process.stderr.write(String(err && err.message ? err.message : err) + "\n");
  process.exitCode = 1;
}
