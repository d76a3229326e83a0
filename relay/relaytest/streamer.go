package relaytest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Streamer sends numbered packets through a relay conn to an echo peer
// until stopped, counting what it sent and what came back.
type Streamer struct {
	Sent, Got atomic.Int64
	stop      chan struct{}
	done      chan struct{}
	once      sync.Once
}

// StartStreamer streams through relayConn to peer, 50 packets a second of
// 172 bytes like one media leg, until Finish or the end of the test.
func StartStreamer(t testing.TB, relayConn net.PacketConn, peer net.Addr) *Streamer {
	s := &Streamer{stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(s.Finish)
	go func() { // reader
		buf := make([]byte, 1600)
		for {
			_ = relayConn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, _, err := relayConn.ReadFrom(buf); err == nil {
				s.Got.Add(1)
			}
			select {
			case <-s.done:
				return
			default:
			}
		}
	}()
	go func() { // writer, 50 packets per second like one media leg
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		payload := make([]byte, 172)
		for {
			select {
			case <-s.stop:
				time.Sleep(300 * time.Millisecond) // let the last echoes arrive
				close(s.done)
				return
			case <-t.C:
				if _, err := relayConn.WriteTo(payload, peer); err == nil {
					s.Sent.Add(1)
				}
			}
		}
	}()
	return s
}

// Finish stops the stream and waits for the last echoes.
func (s *Streamer) Finish() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}
