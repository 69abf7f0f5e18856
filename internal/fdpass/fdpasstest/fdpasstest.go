// Package fdpasstest plays one side of an internal/fdpass connection from
// raw bytes, for fuzzing the other side's handshake code (mount.safe's and
// safefsd's): the input is a script of packets, each sent whole with the
// number of descriptors it asks for, whatever the protocol expects.
//
// A script is a sequence of records: one flags byte (its low two bits are
// how many descriptors the packet carries), a little-endian uint16
// length, and that many bytes of packet. A record cut short ends the
// script.
package fdpasstest

import (
	"encoding/binary"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"safefs/internal/fdpass"
)

// Limits on a script, so that one input stays cheap.
const (
	// MaxPackets bounds the packets of a script.
	MaxPackets = 16
	// MaxPacket bounds one packet: a little more than the protocol
	// takes, so that oversized packets are tried too.
	MaxPacket = fdpass.MaxMessageSize + 64
)

// Packet is one packet of a script.
type Packet struct {
	Data []byte
	FDs  int // descriptors attached, 0 to 3
}

// Parse reads a script.
func Parse(script []byte) []Packet {
	var out []Packet
	for len(script) >= 3 && len(out) < MaxPackets {
		n := int(binary.LittleEndian.Uint16(script[1:]))
		p := Packet{FDs: int(script[0] & 3)}
		script = script[3:]
		n = min(n, len(script), MaxPacket)
		p.Data, script = script[:n], script[n:]
		out = append(out, p)
	}
	return out
}

// Script makes a script of packets (for seeds).
func Script(pkts ...Packet) []byte {
	var out []byte
	for _, p := range pkts {
		out = append(out, byte(p.FDs&3))
		out = binary.LittleEndian.AppendUint16(out, uint16(len(p.Data)))
		out = append(out, p.Data...)
	}
	return out
}

// Msg is a packet carrying m as fdpass encodes it, with fds descriptors;
// it panics on a message fdpass would not send (a seed's mistake).
func Msg(m fdpass.Message, fds int) Packet {
	b, err := fdpass.Marshal(m)
	if err != nil {
		panic(err)
	}
	return Packet{Data: b, FDs: fds}
}

// Play sends the packets on fd, one end of a SOCK_SEQPACKET socket pair,
// attaching descriptors taken from files in turn (the first packet that
// carries one gets files[0], the next files[1], ... cycling), then shuts
// down its side for writing, so that the peer reads the end of the
// connection after the last packet. It stops at the first failed send
// (the peer has closed its end). The caller keeps files and fd.
func Play(fd int, pkts []Packet, files []*os.File) {
	next := 0
	for _, p := range pkts {
		var oob []byte
		if p.FDs > 0 && len(files) > 0 {
			fds := make([]int, p.FDs)
			for i := range fds {
				fds[i] = int(files[next%len(files)].Fd())
				next++
			}
			oob = unix.UnixRights(fds...)
		}
		if err := unix.Sendmsg(fd, p.Data, oob, nil, unix.MSG_NOSIGNAL); err != nil {
			break
		}
	}
	unix.Shutdown(fd, unix.SHUT_WR)
}

// Exchange runs one side of a connection against a script: it makes a
// SOCK_SEQPACKET socket pair, plays the script on one end (Play, with
// files) and calls side with the other end as a Conn with a 5 s timeout.
// It returns once side has returned and the script has been played out,
// with both ends closed; side still running after 20 s fails t, named by
// who. before is the number of descriptors open once the pair was made,
// for the caller's check that side closed every descriptor it received.
func Exchange(t testing.TB, who string, script []byte, files []*os.File, side func(*fdpass.Conn)) (before int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	before = OpenFDs()
	conn, err := fdpass.FileConn(os.NewFile(uintptr(fds[1]), who))
	if err != nil {
		t.Fatal(err)
	}
	conn.Timeout = 5 * time.Second
	played := make(chan struct{})
	go func() {
		Play(fds[0], Parse(script), files)
		close(played)
	}()
	done := make(chan struct{})
	go func() {
		side(conn)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s still runs after 20 s", who)
	}
	conn.Close() // also wakes Play if side stopped reading
	<-played
	unix.Close(fds[0])
	return before
}

// OpenFDs counts the descriptors the process has open, for tests that
// check a side closes every descriptor it receives.
func OpenFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}
