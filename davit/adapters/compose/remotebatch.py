"""Several independent shell commands on the target in one SSH session, run side by side.

Each command davit runs on the target is a session of its own (a channel, sshd's fork of the
user's shell): on a busy host that costs 0.4-0.7 s even for `true`, and pre-flight ran fifteen
one after another. `run_batch` sends them as one script: each command runs in the background in
its own subshell (stdin from /dev/null, its stdout, stderr and exit status in files of a private
`mktemp -d` directory), the script waits for all, then prints per command a header
`INDEX STATUS OUT_BYTES ERR_BYTES` followed by exactly those bytes, so any output (binary,
without a final newline, holding lines that look like headers) comes back whole and unmixed.
Only for commands that do not depend on each other: they run at once, in no set order.
"""

from __future__ import annotations

from typing import Any

from davit.adapters.ssh.remote import RemoteCommandFailed, RemoteHost, Result


def batch_script(commands: list[str]) -> str:
    """The script running `commands` side by side and printing their results, framed."""
    parts = ["d=$(mktemp -d) || exit 1"]
    for i, command in enumerate(commands):
        parts.append(f'{{ ( {command}\n) > "$d/{i}.o" 2> "$d/{i}.e" < /dev/null; echo $? > "$d/{i}.s"; }} &')
    parts.append("wait")
    parts.append(
        f"i=0; while [ $i -lt {len(commands)} ]; do "
        'printf \'%s %s %s %s\\n\' "$i" "$(cat "$d/$i.s")" "$(wc -c < "$d/$i.o")" "$(wc -c < "$d/$i.e")"; '
        'cat "$d/$i.o" "$d/$i.e"; i=$((i+1)); done; rm -rf "$d"'
    )
    return "\n".join(parts) + "\n"


def parse(out: bytes, count: int) -> list[Result]:
    """The results `batch_script` printed, in the commands' order; ValueError if garbled."""
    results: list[Result] = []
    pos = 0
    for i in range(count):
        end = out.index(b"\n", pos)
        index, status, out_len, err_len = (int(w) for w in out[pos:end].split())
        if index != i:
            raise ValueError(f"result {index} where {i} was expected")
        pos = end + 1
        stdout, stderr = out[pos : pos + out_len], out[pos + out_len : pos + out_len + err_len]
        pos += out_len + err_len
        results.append(Result(status, stdout.decode(errors="replace"), stderr.decode(errors="replace")))
    return results


def run_batch(host: RemoteHost, commands: dict[str, str], timeout: float = 600) -> dict[str, Result]:
    """Run `commands` (by key) side by side in one session; each one's status and output."""
    keys = list(commands)
    script = batch_script([commands[k] for k in keys])

    async def go(conn: Any) -> Any:
        return await conn.run(script, encoding=None, check=False, timeout=timeout)

    done = host.run_async(go)
    out = done.stdout or b""
    try:
        results = parse(out, len(keys))
    except ValueError:  # the script itself failed (no temporary directory): its status says why
        err = (done.stderr or b"").decode(errors="replace")
        raise RemoteCommandFailed(host.address.where, script, done.exit_status, err) from None
    return dict(zip(keys, results, strict=True))
