package offload

// The program's objects are generated from bpf/relay.c with Debian's clang
// and committed, so building supernode needs no clang. `make generate`
// reruns this; CI reruns it and fails if the committed objects differ.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type chan_key -type chan_peer -type peer_key -type chan_client -type alloc -type alloc_stats -type counter relay bpf/relay.c
