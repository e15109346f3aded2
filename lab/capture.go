package lab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/mdlayher/packet"
)

// captureDrain is how long Stop keeps reading after the last queued frame:
// frames the kernel delivered before Stop are already queued on the
// socket and are read without waiting, so this only bounds the wait for
// an empty queue.
const captureDrain = 20 * time.Millisecond

// snapLen is the largest frame kept (jumbo frames are not used here).
const snapLen = 65535

// Capture records every frame seen on one interface of a namespace (both
// directions, like tcpdump -i) into a pcap file, from an AF_PACKET socket
// opened inside the namespace. Unlike a tcpdump child, Stop is exact:
// every frame the interface saw before Stop is in the file. Timestamps
// are taken when the frame is read, not by the kernel.
type Capture struct {
	Path string // the pcap file (in the namespace's Dir)

	conn    *packet.Conn
	file    *os.File
	wg      sync.WaitGroup
	stop    chan struct{}
	once    sync.Once
	frames  int
	err     error
	stopErr error
}

// StartCapture starts capturing on ifName in the namespace. Call Stop.
func (n *Netns) StartCapture(ifName string) (*Capture, error) {
	if err := CheckIfName(ifName); err != nil {
		return nil, err
	}
	var conn *packet.Conn
	if err := n.Do(func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, 0x0003 /* ETH_P_ALL */, nil)
		return err
	}); err != nil {
		return nil, fmt.Errorf("lab: capture on %s/%s: %w", n.Name, ifName, err)
	}
	f, err := os.CreateTemp(n.Dir, ifName+".*.pcap")
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("lab: capture file: %w", err)
	}
	w := pcapgo.NewWriterNanos(f)
	if err := w.WriteFileHeader(snapLen, layers.LinkTypeEthernet); err != nil {
		conn.Close()
		f.Close()
		return nil, fmt.Errorf("lab: capture file header: %w", err)
	}
	c := &Capture{Path: f.Name(), conn: conn, file: f, stop: make(chan struct{})}
	c.wg.Go(func() { c.loop(w) })
	return c, nil
}

func (c *Capture) loop(w *pcapgo.Writer) {
	buf := make([]byte, snapLen)
	for {
		n, _, err := c.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				select {
				case <-c.stop:
					return // drained
				default:
					continue
				}
			}
			c.err = err
			return
		}
		ci := gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: n, Length: n}
		if err := w.WritePacket(ci, buf[:n]); err != nil {
			c.err = err
			return
		}
		c.frames++
	}
}

// Stop drains what the interface already delivered, closes the file and
// returns its path and the number of frames in it. Idempotent.
func (c *Capture) Stop() (path string, frames int, err error) {
	c.once.Do(func() {
		close(c.stop)
		c.conn.SetReadDeadline(time.Now().Add(captureDrain))
		c.wg.Wait()
		c.stopErr = errors.Join(c.err, c.conn.Close(), c.file.Close())
	})
	return c.Path, c.frames, c.stopErr
}

// Frame is one captured frame.
type Frame struct {
	At   time.Time
	Data []byte // Ethernet frame
}

// ReadPcap reads every frame of a pcap file (e.g. a Capture's).
func ReadPcap(path string) ([]Frame, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("lab: read pcap: %w", err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("lab: read pcap %s: %w", path, err)
	}
	var frames []Frame
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return frames, nil
		}
		if err != nil {
			return frames, fmt.Errorf("lab: read pcap %s: %w", path, err)
		}
		frames = append(frames, Frame{At: ci.Timestamp, Data: data})
	}
}
