package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"

	"safefs/internal/fdpass"
)

// serveActivated serves the connection systemd accepted for us
// (Accept=yes: one safefsd@ instance per connection, the connection on
// fd 3). It reports false when the process was not socket-activated.
//
// go-systemd's Listeners() returns nothing for an accepted connection, so
// the descriptor is taken with Files and wrapped by fdpass.
func serveActivated(debugFUSE bool) (int, bool) {
	files := activation.Files(true)
	if len(files) == 0 {
		return 0, false
	}
	if len(files) != 1 {
		log.Printf("socket activation passed %d descriptors; safefsd.socket must use Accept=yes", len(files))
		return exitFailure, true
	}
	conn, err := fdpass.FileConn(files[0])
	if err != nil {
		log.Printf("socket activation: %v (safefsd.socket must be a sequential-packet socket with Accept=yes)", err)
		return exitFailure, true
	}
	return serveConn(conn, debugFUSE), true
}

// listen runs a standalone service on a Unix socket at path: each
// connection is served by a child process of its own (safefsd
// --fdpass-fd), so that one mount's daemon never sees another's
// filesystem. The socket is for root only. SIGTERM or SIGINT stop the
// listener; mounts being served carry on in their children.
func listen(path string) int {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			log.Printf("%s exists and is not a socket; remove it or choose another path", path)
			return exitFailure
		}
		if c, err := net.Dial("unixpacket", path); err == nil {
			c.Close()
			log.Printf("%s: another safefsd is already listening", path)
			return exitFailure
		}
		os.Remove(path) // stale socket of a listener that died
	}
	old := syscall.Umask(0o077) // root only, from the moment it exists
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	syscall.Umask(old)
	if err != nil {
		log.Printf("listening on %s: %v", path, err)
		return exitFailure
	}
	self, err := os.Executable()
	if err != nil {
		log.Printf("finding my own executable: %v", err)
		return exitFailure
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		l.Close() // also removes the socket file
	}()
	log.Printf("listening on %s", path)
	for {
		c, err := l.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return 0
		}
		if err != nil {
			log.Printf("accepting on %s: %v", path, err)
			continue
		}
		if err := spawnConn(self, c); err != nil {
			log.Printf("serving a connection on %s: %v", path, err)
		}
	}
}

// spawnConn starts a child safefsd for one accepted connection.
func spawnConn(self string, c *net.UnixConn) error {
	f, err := c.File()
	c.Close()
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(self, "--fdpass-fd", "3")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", self, err)
	}
	go cmd.Wait() // reap it when its mount ends
	return nil
}
