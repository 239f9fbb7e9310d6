#!/bin/sh
# Serve the bundled targets.conf in the foreground (what `make run` does).
# The LUN's backing file is created under var/ on first start.
set -e
cd "$(dirname "$0")/.."
CONF=${HOLDFAST_CONF:-$PWD/targets.conf}
mkdir -p var
IQN=$(sed -n 's/^[[:space:]]*{[[:space:]]*name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p; s/^[[:space:]]*name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$CONF" | head -n1)
PORT=$(sed -n 's/.*portals[^"]*"[^"]*:\([0-9][0-9]*\)[="].*/\1/p' "$CONF" | head -n1)
PORT=${PORT:-3260}
cat <<MSG
holdfast: serving $CONF on port $PORT (Ctrl-C stops it)

  libiscsi / qemu-img URL:
    iscsi://127.0.0.1:$PORT/$IQN/1
  QEMU guest disk:
    qemu-system-x86_64 ... -drive driver=iscsi,transport=tcp,portal=127.0.0.1:$PORT,target=$IQN,lun=1,if=none,id=d0 -device virtio-blk-pci,drive=d0
  Linux kernel initiator (open-iscsi):
    iscsiadm -m discovery -t sendtargets -p 127.0.0.1:$PORT
    iscsiadm -m node -T $IQN -p 127.0.0.1:$PORT --login
    iscsiadm -m node -T $IQN -p 127.0.0.1:$PORT --logout
  Management (stock tgtadm from the tgt package):
    tgtadm --lld iscsi --op show --mode target

MSG
exec ./build/holdfastd -f -c "$CONF" "$@"
