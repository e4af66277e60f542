#!/usr/bin/env python3
"""Instructions per operation of one `switch_loop` case, instruction by instruction.

Runs the case under callgrind twice (N and 2N operations, `--dump-instr=yes`), subtracts, and
prints every instruction executed at least a quarter of a time per operation with its count,
its disassembly (`objdump -d`) and its function, then the total: the setup cancels out, so
what is left is exactly one operation's path. This is how the cuts in benches/README.md
("Issue 17") were found and counted.

    cargo build --release --example switch_loop
    python3 benches/instr.py switch_main_child            # N = 100000
    python3 benches/instr.py lifetime --n 20000
    python3 benches/instr.py switch_two_greenlets --bin /tmp/other/switch_loop

Sample output (one round trip main -> child -> main is two operations, so each line of it
shows 0.50):

      0.50 0x25679 movzbl 0xac(%r15),%eax   switch_loop::workloads::MainChild::run
      0.50 0x25681 cmp    $0x3,%al          switch_loop::workloads::MainChild::run
      ...
    total 42.0
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

LINE = re.compile(r"^(0x[0-9a-f]+)((?: \d+)+)$")


def costs(binary, case, n, out):
    """Self cost per instruction address (and function) of one callgrind run."""
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--dump-instr=yes", "--compress-pos=no",
         "--compress-strings=no", f"--callgrind-out-file={out}", binary, case, str(n)],
        capture_output=True, check=True)
    result = collections.Counter()
    function = None
    call_line = False
    with open(out) as f:
        for line in f:
            if line.startswith("fn="):
                function = line[3:].strip()
                continue
            if line.startswith("calls="):
                # The next cost line is the call's inclusive cost: not this instruction's own.
                call_line = True
                continue
            m = LINE.match(line.strip())
            if m:
                if call_line:
                    call_line = False
                    continue
                result[(int(m.group(1), 16), function)] += int(m.group(2).split()[-1])
    return result


def disassembly(binary):
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", binary],
                          capture_output=True, text=True, check=True).stdout
    lines = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\s*(.*)$", line)
        if m:
            lines[int(m.group(1), 16)] = m.group(2)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a switch_loop case (switch_loop prints the list)")
    parser.add_argument("--n", type=int, default=100_000, help="operations of the smaller run")
    parser.add_argument("--bin", default="target/release/examples/switch_loop")
    args = parser.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"instr.py: {args.bin} not found (cargo build --release --example switch_loop)")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            small = costs(args.bin, args.case, args.n, os.path.join(tmp, "small.out"))
            large = costs(args.bin, args.case, 2 * args.n, os.path.join(tmp, "large.out"))
        except subprocess.CalledProcessError as e:
            said = [l for l in e.stderr.decode().splitlines() if l and not l.startswith("==")]
            sys.exit(f"instr.py: {args.bin} {args.case} failed: {' '.join(said)}")
    per_op = {k: (large.get(k, 0) - small.get(k, 0)) / args.n for k in set(small) | set(large)}
    asm = disassembly(args.bin)
    total = 0.0
    for (address, function), count in sorted(per_op.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if abs(count) < 0.25:
            continue
        total += count
        print(f"{count:6.2f} {address:#x} {asm.get(address, '?'):40s} {function[:70]}")
    print(f"total {total:.1f}")


if __name__ == "__main__":
    main()
