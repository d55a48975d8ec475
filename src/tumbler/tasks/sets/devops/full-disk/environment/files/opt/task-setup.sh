chmod 755 /opt/app/bin/diskcheck
mkdir -p /var/log/app/audit
python3 - <<'EOF'
import random
rng = random.Random(7)
def blob(path, size):
    with open(path, "wb") as fh:
        fh.write(bytes(rng.getrandbits(8) for _ in range(size)))
blob("/var/log/app/app.log", 300_000)
for i in range(1, 6):
    blob(f"/var/log/app/app.log.{i}", 400_000)
blob("/var/log/app/audit/2024-q4.log", 250_000)
blob("/var/log/app/audit/2025-q1.log", 250_000)
EOF
