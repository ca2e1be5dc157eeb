# The independent verifier of measured launch: replays husk's measurement log with Python's
# hashlib, as README.md's "Replay" describes it, and prints the PCR value it arrives at (hex).
# The records of PCR PCR extended in the TPM's current epoch (tpm2_readclock's reset and restart
# counts), in file order, from the first one's base (zeros without one); a line that is not JSON
# (a torn one) is skipped. Not husk's code, on purpose: the tests compare this value with
# tpm2_pcrread's and `husk attest --verify`'s. Used by vmm/tests/measure_tpm.rs and
# tests/guest/measure-e2e.sh.
# Usage: python3 measure-replay.py LOG TCTI PCR
import hashlib, json, subprocess, sys

log, tcti, pcr = sys.argv[1], sys.argv[2], int(sys.argv[3])
clock = subprocess.run(["tpm2_readclock", "-T", tcti], capture_output=True, text=True, check=True).stdout
c = {k.strip(): v.strip() for k, _, v in (l.partition(":") for l in clock.splitlines())}
epoch = (int(c["reset_count"]), int(c["restart_count"]))
value = None
for line in open(log, "rb"):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    t = r.get("tpm")
    if r["pcr"] != pcr or not t or (t["reset_count"], t["restart_count"]) != epoch:
        continue
    if value is None:
        value = bytes.fromhex(t.get("base", "00" * 32))
    d = [x["digest"] for x in r["digests"] if x["hashAlg"] == "sha256"][0]
    value = hashlib.sha256(value + bytes.fromhex(d)).digest()
print((value or bytes(32)).hex())
