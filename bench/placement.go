package main

import (
	"fmt"
	"strings"
)

// placementLines summarise, per variant, where the cpu phase's work ran:
// each CPU's busy share and NET_RX softirqs per second over the steady
// span, and the packets per second each side received, medians over the
// runs. It is the evidence that RPS put each side's receive work on its
// own core.
func placementLines(runs []Run, variants []Variant) []string {
	var lines []string
	for _, v := range variants {
		var busy, netrx, processed, ipis, drops [][]float64 // per CPU, per run
		var toServer, toLoader, before []float64
		for _, r := range runs {
			c := r.Core
			if r.Phase != "cpu" || r.Variant != v.Name || c == nil || c.Seconds <= 0 {
				continue
			}
			for len(busy) < len(c.OtherBusy) {
				busy = append(busy, nil)
			}
			for i, b := range c.OtherBusy {
				busy[i] = append(busy[i], 100*b)
			}
			for len(netrx) < len(c.NetRX) {
				netrx = append(netrx, nil)
			}
			for i, n := range c.NetRX {
				netrx[i] = append(netrx[i], float64(n)/c.Seconds)
			}
			for len(processed) < len(c.Softnet) {
				processed, ipis, drops = append(processed, nil), append(ipis, nil), append(drops, nil)
			}
			for i, n := range c.Softnet {
				processed[i] = append(processed[i], float64(n.Processed)/c.Seconds)
				ipis[i] = append(ipis[i], float64(n.ReceivedRPS)/c.Seconds)
				drops[i] = append(drops[i], float64(n.Dropped))
			}
			toServer = append(toServer, float64(c.Sent)/c.Seconds)
			toLoader = append(toLoader, float64(c.Delivered)/c.Seconds)
			before = append(before, 100*c.BusyBefore)
		}
		if len(toServer) == 0 {
			continue
		}
		var parts []string
		for i := range busy {
			p := fmt.Sprintf("CPU %d busy %.0f%%, NET_RX %s/s", i, spreadOf(busy[i]).Median, thousands(spreadOf(netrx[i]).Median))
			if i < len(processed) {
				p += fmt.Sprintf(", backlog processed %s pkt/s, woken by RPS %s/s, backlog drops %s",
					thousands(spreadOf(processed[i]).Median), thousands(spreadOf(ipis[i]).Median), thousands(spreadOf(drops[i]).Median))
			}
			parts = append(parts, p)
		}
		lines = append(lines, fmt.Sprintf("%s: %s; packets to the server %s/s, to the loader %s/s; server core busy %.0f%% just before the runs",
			v.Name, strings.Join(parts, "; "), thousands(spreadOf(toServer).Median), thousands(spreadOf(toLoader).Median), spreadOf(before).Median))
	}
	return lines
}
