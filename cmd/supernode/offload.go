package main

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/supernode/supernode/metrics"
	"github.com/supernode/supernode/offload"
)

// startOffload starts the kernel data path as --offload says: nil with a
// log line saying why when auto cannot, an error when on cannot.
func startOffload(o *options, log *slog.Logger, m *metrics.Metrics, relayIPs []netip.Addr, udpListens []string) (*offload.Offload, error) {
	if o.offload == "off" {
		log.Info("kernel path off (--offload off): ChannelData is relayed in user space")
		return nil, nil
	}
	if len(udpListens) == 0 {
		log.Info("kernel path off: no UDP listener")
		return nil, nil
	}
	addrs := append([]netip.Addr(nil), relayIPs...)
	for _, a := range udpListens {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return nil, fmt.Errorf("--listen %s: %w", a, err)
		}
		addrs = append(addrs, ap.Addr())
	}
	k, err := offload.New(offload.Config{Addrs: addrs, MaxChannels: o.offloadMax, Logger: log})
	if err != nil {
		if o.offload == "on" {
			return nil, fmt.Errorf("--offload on: %w", err)
		}
		log.Info("kernel path off: ChannelData is relayed in user space", "reason", err.Error())
		return nil, nil
	}
	k.Register(m)
	log.Info("kernel path on: UDP ChannelData is relayed by the eBPF program", "interfaces", fmt.Sprint(k.Interfaces()))
	return k, nil
}
