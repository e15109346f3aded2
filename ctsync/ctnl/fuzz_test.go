package ctnl

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// nlmsgNoop is NLMSG_NOOP: a message the parsers must skip.
const nlmsgNoop = 1

// appendNlmsg appends one netlink message (header and payload, padded to
// 4 bytes) as the kernel frames it.
func appendNlmsg(b []byte, typ, flags uint16, seq uint32, payload []byte) []byte {
	b = binary.NativeEndian.AppendUint32(b, uint32(nlmsgHdrLen+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // from the kernel: port 0
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// appendNlmsgErr appends the kernel's answer to request seq under
// NETLINK_CAP_ACK: struct nlmsgerr, the negated errno (0: the
// acknowledgement) and the request's header, flagged NLM_F_CAPPED.
func appendNlmsgErr(b []byte, seq uint32, errno unix.Errno) []byte {
	var p [4 + nlmsgHdrLen]byte
	binary.NativeEndian.PutUint32(p[0:], uint32(-int32(errno)))
	binary.NativeEndian.PutUint32(p[4:], 200)                                   // the request's length
	binary.NativeEndian.PutUint16(p[8:], nfnlSubsysCTNetlink<<8|ipctnlMsgCTNew) // its type
	binary.NativeEndian.PutUint16(p[10:], nlmFRequest)                          // its flags
	binary.NativeEndian.PutUint32(p[12:], seq)                                  // its sequence number
	return appendNlmsg(b, nlmsgError, 0x100 /* NLM_F_CAPPED */, seq, p[:])
}

// donePayload is NLMSG_DONE's payload: the dump's status.
func donePayload(status int32) []byte {
	return binary.NativeEndian.AppendUint32(nil, uint32(status))
}

// ackErrnos are the errnos a batch record meets (ctnl.go: create, update,
// delete) and one that is none of them.
var ackErrnos = []unix.Errno{0, unix.EEXIST, unix.ENOENT, unix.EINVAL, unix.EBUSY, unix.ENOMEM, unix.EPERM}

// FuzzParseAcks holds the batch-ACK parser to two properties. Raw: any
// datagram leaves the results the length they were, and once the end
// marker is read nothing after it counts (the same datagram with bytes
// appended gives the same results). Round trip: the kernel's answers to a
// batch whose records fail with errnos drawn from the input (an error
// message per failed record, the last record's answer always), with
// messages of other types and of sequence numbers outside the batch in
// between, split into datagrams at input-chosen message boundaries, parse
// back to exactly those errnos, and the end marker is the last datagram.
func FuzzParseAcks(f *testing.F) {
	// The kernel's answer to a batch of three whose second record met
	// EEXIST, then the acknowledgement of the last.
	var real []byte
	real = appendNlmsgErr(real, 101, unix.EEXIST)
	real = appendNlmsgErr(real, 102, 0)
	f.Add(real, uint32(100), uint16(2))
	f.Add(appendNlmsgErr(nil, 7, 0), uint32(7), uint16(0))
	f.Add(appendNlmsgErr(nil, 0, unix.ENOENT), uint32(0xffffffff), uint16(1)) // sequence numbers wrap
	f.Add([]byte{0xff, 0xff, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, uint32(1), uint16(0))
	f.Add(appendNlmsg(nil, nlmsgNoop, 0, 5, nil), uint32(5), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, base uint32, n uint16) {
		records := int(n)%maxChunk + 1
		res := make([]unix.Errno, records)
		done, err := parseAcks(data, base, res)
		if len(res) != records {
			t.Fatalf("results resized to %d", len(res))
		}
		if done && err != nil {
			t.Fatalf("done and failed: %v", err)
		}
		if done {
			again := make([]unix.Errno, records)
			done2, err := parseAcks(append(slices.Clip(data), 0xde, 0xad, 0xbe, 0xef, 20, 0, 0, 0), base, again)
			if !done2 || err != nil || !slices.Equal(res, again) {
				t.Fatalf("bytes after the end marker changed the outcome: done %v err %v, %v then %v", done2, err, res, again)
			}
		}

		// Round trip: the kernel's answers built from the input.
		want := make([]unix.Errno, records)
		var msgs [][]byte
		for i := range records {
			var c byte
			if len(data) > 0 {
				c = data[i%len(data)]
			}
			want[i] = ackErrnos[int(c)%len(ackErrnos)]
			seq := base + uint32(i)
			if c&0x80 != 0 { // noise the parser must skip
				msgs = append(msgs, appendNlmsg(nil, nlmsgNoop, 0, seq, nil))
				msgs = append(msgs, appendNlmsgErr(nil, base-1, unix.EPERM))
				msgs = append(msgs, appendNlmsgErr(nil, base+uint32(records), unix.EPERM))
			}
			if want[i] != 0 || i == records-1 {
				msgs = append(msgs, appendNlmsgErr(nil, seq, want[i]))
			}
		}
		got := make([]unix.Errno, records)
		var dgram []byte
		for i, m := range msgs {
			dgram = append(dgram, m...)
			if i < len(msgs)-1 && (len(data) == 0 || data[i%len(data)]&1 == 0) {
				continue // the next message goes in the same datagram
			}
			done, err := parseAcks(dgram, base, got)
			if err != nil {
				t.Fatalf("datagram %x: %v", dgram, err)
			}
			if done != (i == len(msgs)-1) {
				t.Fatalf("end marker read at message %d of %d", i, len(msgs))
			}
			dgram = dgram[:0]
		}
		if !slices.Equal(want, got) {
			t.Fatalf("errnos (-sent +parsed):\n%s", cmp.Diff(want, got))
		}
	})
}

// FuzzParseDumpDatagram holds the dump's datagram parser to two
// properties. Raw: an error always ends the dump; a datagram with no
// message of this dump yields no flow, no rejection and no end; every flow
// has its original tuple; bytes after a control message that ended the
// dump change nothing. Round trip:
// the flows of encodeCases, framed as the kernel frames a dump (NEW
// messages with the request's sequence number, NLM_F_MULTI), mixed with
// messages of another sequence number and ended by NLMSG_DONE with a
// status drawn from the input, come back in order and equal to what
// ParseEvent makes of each message alone; a negative status is an error.
func FuzzParseDumpDatagram(f *testing.F) {
	cs := encodeCases()
	var real []byte
	for i := range cs {
		real = AppendUpdate(real, &cs[i].f, 9)
	}
	f.Add(appendNlmsg(real, nlmsgDone, 2 /* NLM_F_MULTI */, 9, []byte{0, 0, 0, 0}), uint32(9))
	f.Add(real, uint32(9))
	f.Add(appendNlmsg(nil, nlmsgDone, 2, 9, donePayload(-int32(unix.ENOMEM))), uint32(9))
	f.Add(appendNlmsgErr(nil, 9, unix.EBUSY), uint32(9))
	f.Add(appendNlmsgErr(nil, 9, 0), uint32(9))
	f.Add(AppendDelete(nil, &cs[0].f, 8), uint32(9))
	f.Fuzz(func(t *testing.T, data []byte, seq uint32) {
		var rej [NumEventReasons]uint64
		fs, mine, done, err := parseDumpDatagram(data, seq, nil, &rej)
		if err != nil && !done {
			t.Fatalf("error %v without the end of the dump", err)
		}
		if err == nil && !mine && (len(fs) > 0 || rej != [NumEventReasons]uint64{} || done) {
			t.Fatalf("no message of the dump, yet %d flows, rejections %v, done %v", len(fs), rej, done)
		}
		for i := range fs {
			if !fs[i].Orig.Src.IsValid() || !fs[i].Orig.Dst.IsValid() {
				t.Fatalf("flow %d without its original tuple: %+v", i, fs[i])
			}
		}
		if done && (err == nil || errors.As(err, new(unix.Errno))) { // ended by a control message
			var rej2 [NumEventReasons]uint64
			fs2, mine2, done2, err2 := parseDumpDatagram(append(slices.Clip(data), AppendUpdate(nil, &cs[0].f, seq)...), seq, nil, &rej2)
			if !done2 || mine2 != mine || (err2 == nil) != (err == nil) || rej2 != rej || len(fs2) != len(fs) {
				t.Fatalf("bytes after the end changed the outcome: %d flows, done %v, err %v; then %d, %v, %v", len(fs), done, err, len(fs2), done2, err2)
			}
		}

		// Round trip: a dump built from the input.
		var dgram []byte
		var want []ctwire.Flow
		for i, c := range data {
			if i == 16 { // enough to mix; more slows the fuzzer's minimizing
				break
			}
			k := int(c) % len(cs)
			if c&0x80 != 0 {
				dgram = AppendUpdate(dgram, &cs[k].f, seq+1) // another request's answer
				continue
			}
			start := len(dgram)
			dgram = AppendUpdate(dgram, &cs[k].f, seq)
			binary.NativeEndian.PutUint16(dgram[start+6:], 2) // NLM_F_MULTI, as in a dump
			var f ctwire.Flow
			if _, err := ParseEvent(dgram[start:], &f); err != nil {
				t.Fatalf("case %s: %v", cs[k].name, err)
			}
			want = append(want, f)
		}
		var status int32
		if len(data) > 0 && data[0]&0x40 != 0 {
			status = -int32(ackErrnos[1+int(data[0])%(len(ackErrnos)-1)])
		}
		dgram = appendNlmsg(dgram, nlmsgDone, 2, seq, donePayload(status))
		got, mine, done, err := parseDumpDatagram(dgram, seq, nil, nil)
		if !mine || !done || (err != nil) != (status < 0) {
			t.Fatalf("dump with status %d: mine %v done %v err %v", status, mine, done, err)
		}
		// cmp.Diff only to report: under the fuzzer's instrumentation its
		// reflection costs a thousand times the parse.
		if !slices.Equal(want, got) {
			t.Fatalf("flows (-sent +parsed):\n%s", cmp.Diff(want, got, addrEq))
		}
	})
}
