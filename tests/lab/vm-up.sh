#!/usr/bin/env bash
# Start LAB_VMS (default 2) lab hosts that are virtual machines with Debian's own kernel (tests/lab/vm/Dockerfile):
# fleet-lab-vm-1.., ssh on 127.0.0.1:2241.. (and, from inside a VM, 10.0.2.2:2241..). QEMU runs them under software
# emulation (TCG): the lab machine's nested KVM fails on a Linux guest ("KVM internal error ... emulation failure").
# Safe to run again: running VMs are kept. tests/lab/vm-down.sh stops them.
source "$(dirname "$0")/lib.sh"
LAB_VMS="${LAB_VMS:-2}"
VM_BASE_PORT="${VM_BASE_PORT:-2240}"
vm_dir="$LAB_STATE/vm"
mkdir -p "$vm_dir"
# One at a time (make test boots the VMs in the background while bench-smoke runs; test-vm's own call then waits
# for that one and finds them up).
exec 9>"$vm_dir/up.lock"
flock 9

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing: run make host (tools/setup-host.sh)"
"$LAB_DIR/build-image.sh" trixie
[ -f "$LAB_SSH_KEY" ] || die "no lab SSH key at $LAB_SSH_KEY: run tests/lab/up.sh first"

# The disk image: built from the definition (and the lab key that logs in), once; each VM writes to an overlay.
want="$( (cat "$LAB_DIR/vm/Dockerfile" "$LAB_SSH_KEY.pub"; docker image inspect -f '{{.Id}}' "$(lab_image_ref trixie)") \
        | sha256sum | cut -c1-16)"
base="$vm_dir/base-$want.raw"
if [ ! -f "$base" ]; then
  "$LAB_DIR/vm-down.sh"
  rm -f "$vm_dir"/base-*.raw "$vm_dir"/*.qcow2 "$vm_dir"/vmlinuz "$vm_dir"/initrd.img
  log "building the VM image ($want)"
  docker build --quiet --network host --build-arg "BASE=$(lab_image_ref trixie)" -t "$LAB_PREFIX-vm:trixie" \
    "$LAB_DIR/vm" >"$vm_dir/build.log" 2>&1 || { tail -n 20 "$vm_dir/build.log" >&2; die "building the VM image failed"; }
  root="$vm_dir/root"
  rm -rf "$root" && mkdir -p "$root"
  cid="$(docker create "$LAB_PREFIX-vm:trixie")"
  docker export "$cid" | tar -C "$root" -x
  docker rm "$cid" >/dev/null
  rm -f "$root/.dockerenv" "$root/etc/resolv.conf"
  echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf"  # QEMU's user network's resolver
  install -d -m 0700 "$root/root/.ssh"
  install -m 0600 "$LAB_SSH_KEY.pub" "$root/root/.ssh/authorized_keys"
  cp "$root"/boot/vmlinuz-* "$vm_dir/vmlinuz"
  cp "$root"/boot/initrd.img-* "$vm_dir/initrd.img"
  mkfs.ext4 -q -F -d "$root" -L root "$base.tmp" 8G
  rm -rf "$root"
  mv "$base.tmp" "$base"
fi

start_vm() {
  local i="$1" name="$LAB_PREFIX-vm-$1" port=$((VM_BASE_PORT + $1))
  local pidfile="$vm_dir/$name.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then log "$name is running"; return; fi
  rm -f "$vm_dir/$name.qcow2"
  qemu-img create -q -f qcow2 -F raw -b "$base" "$vm_dir/$name.qcow2"
  log "starting $name (Debian's kernel under QEMU, ssh on 127.0.0.1:$port)"
  qemu-system-x86_64 -name "$name" -accel tcg,thread=multi -cpu max -smp 2 -m 3072 \
    -kernel "$vm_dir/vmlinuz" -initrd "$vm_dir/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw panic=-1 systemd.hostname=$name" \
    -drive "file=$vm_dir/$name.qcow2,format=qcow2,if=virtio" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
    -display none -serial "file:$vm_dir/$name.console" -daemonize -pidfile "$pidfile" 9>&-  # (not the lock)
}
wait_vm() {
  local name="$LAB_PREFIX-vm-$1" port=$((VM_BASE_PORT + $1)) deadline=$((SECONDS + 300))
  until ssh -q -i "$LAB_SSH_KEY" -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
          -o ConnectTimeout=5 root@127.0.0.1 'docker info >/dev/null 2>&1'; do
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$vm_dir/$name.console" >&2; die "$name: no ssh and docker within 300s"; }
    sleep 2
  done
  log "$name is up (Docker answering, ssh on 127.0.0.1:$port)"
}
for i in $(seq 1 "$LAB_VMS"); do start_vm "$i"; done
waits=()
for i in $(seq 1 "$LAB_VMS"); do wait_vm "$i" & waits+=($!); done
for w in "${waits[@]}"; do wait "$w" || die "a lab VM did not come up"; done
