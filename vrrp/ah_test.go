package vrrp

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

// AHSHA256 known answers computed independently in Python (hmac, hashlib,
// RFC 5869 HKDF by hand) from the layout in the package doc: password
// "change-me", epoch 0x69254250, seq 1, IPv4 ID 1.
const (
	ahSHA256Key = "11f49481a25f91b9be0764808f4ac9bda78a8205fe4bb79a75da111d4424e1c6"
	// 192.0.2.1 > 224.0.0.18, VRRPv3 vrid 10 prio 200 1 s, 203.0.113.1.
	ahSHA256IPv4 = "45c0004000010000ff3318b6c0000201e0000012700600006925425000000001230a29b26c7833556bcd44c12767478400000000310ac801006427fdcb007101"
	// fe80::1 > ff02::12, VRRPv3 vrid 7 prio 100 1 s, fe80::100 2001:db8::1.
	ahSHA256IPv6 = "6c000000004833fffe800000000000000000000000000001ff020000000000000000000000000012700600006925425000000001187a135a7db2dad6e992ffe46d574b73000000003107640200643f28fe80000000000000000000000000010020010db8000000000000000000000001"
)

func TestSHA256Key(t *testing.T) {
	k, err := SHA256Key("change-me")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ahSHA256Key, hex.EncodeToString(k)); diff != "" {
		t.Error(diff)
	}
}

func TestAHSHA256Vectors(t *testing.T) {
	c := mustCodec(t, Config{Version: 3, Auth: AuthAH, Password: "change-me"})
	ctr := AHCounter{Epoch: 0x69254250, Seq: 1}
	for _, v := range []struct {
		name, hex, src, dst string
		adv                 Advert
	}{
		{"ipv4", ahSHA256IPv4, "192.0.2.1", "224.0.0.18", Advert{VRID: 10, Priority: 200, Interval: time.Second, Addrs: addrs("203.0.113.1")}},
		{"ipv6", ahSHA256IPv6, "fe80::1", "ff02::12", Advert{VRID: 7, Priority: 100, Interval: time.Second, Addrs: addrs("fe80::100", "2001:db8::1")}},
	} {
		t.Run(v.name, func(t *testing.T) {
			out, err := c.AppendPacket(nil, netip.MustParseAddr(v.src), netip.MustParseAddr(v.dst), &v.adv, ctr)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(v.hex, hex.EncodeToString(out)); diff != "" {
				t.Errorf("(-python +ours):\n%s", diff)
			}
			r, err := c.Decode(mustHex(t, v.hex), nil)
			if err != nil || !r.AuthOK || r.SPI != ctr.Epoch || r.Seq != 1 {
				t.Errorf("Decode: %+v, %v", r, err)
			}
		})
	}
}

// TestAHMutableFields: the ICV ignores exactly the mutable fields.
func TestAHMutableFields(t *testing.T) {
	c := mustCodec(t, Config{Version: 3, Auth: AuthAH, Password: "change-me", Unicast: true})
	p4 := mustHex(t, ahSHA256IPv4)
	p4[1], p4[8] = 0x00, 17 // TOS, TTL
	p4[6] = 0x40            // DF
	fixIPv4Checksum(p4)
	if r, err := c.Decode(p4, nil); err != nil || !r.AuthOK {
		t.Errorf("IPv4 mutable fields changed: %+v %v", r, err)
	}
	p6 := mustHex(t, ahSHA256IPv6)
	p6[0], p6[1], p6[2], p6[3], p6[7] = 0x60, 0x0a, 0xbc, 0xde, 1 // TC, flow label, hop limit
	if r, err := c.Decode(p6, nil); err != nil || !r.AuthOK {
		t.Errorf("IPv6 mutable fields changed: %+v %v", r, err)
	}
	p6 = mustHex(t, ahSHA256IPv6)
	p6[39] ^= 1 // destination is immutable
	if r, _ := c.Inspect(p6, nil); r.AuthOK {
		t.Error("IPv6 destination change accepted")
	}
}

// TestKeepalivedTTLRule: keepalived keeps the TTL in the ICV for multicast
// and zeroes it for unicast.
func TestKeepalivedTTLRule(t *testing.T) {
	p := mustHex(t, kaAHSeq1)
	p[8] = 64
	fixIPv4Checksum(p)
	if r, _ := mustCodec(t, Config{Version: 2, Auth: AuthKeepalivedAH, Password: "secretpw"}).Inspect(p, nil); r.AuthOK {
		t.Error("multicast: TTL change accepted")
	}
	uc := mustCodec(t, Config{Version: 2, Auth: AuthKeepalivedAH, Password: "secretpw", Unicast: true})
	a := Advert{VRID: 1, Priority: 100, Interval: time.Second}
	out, err := uc.AppendPacket(nil, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), &a, AHCounter{Seq: 5})
	if err != nil {
		t.Fatal(err)
	}
	out[8] = 60
	fixIPv4Checksum(out)
	if r, err := uc.Decode(out, nil); err != nil || !r.AuthOK {
		t.Errorf("unicast: TTL change rejected: %+v %v", r, err)
	}
}

func TestParseAHRejects(t *testing.T) {
	good := mustHex(t, kaAHSeq1)[20:]
	tests := []struct {
		name string
		b    []byte
		want Reason
	}{
		{"11 bytes", good[:11], ReasonAHShort},
		{"next header", append([]byte{6}, good[1:]...), ReasonAHBadNextHeader},
		{"payload length 5", append([]byte{112, 5}, good[2:]...), ReasonAHBadLength},
		{"payload length 6 short", append([]byte{112, 6}, good[2:30]...), ReasonAHShort},
		{"icv cut", good[:20], ReasonAHShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseAH(tt.b)
			if diff := cmp.Diff(tt.want, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplayState(t *testing.T) {
	const silence = 3 * time.Second // the receiver's Master_Down_Interval
	type step struct {
		spi, seq uint32
		at       time.Duration
		want     Reason // "" accepted
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first accepted whatever it is", []step{{5000, 900, 0, ""}}},
		{"increasing", []step{{5000, 1, 0, ""}, {5000, 2, 1, ""}, {5000, 10, 2, ""}}},
		{"duplicate", []step{{5000, 1, 0, ""}, {5000, 1, 1, ReasonReplay}}},
		{"older", []step{{5000, 7, 0, ""}, {5000, 6, 1, ReasonReplay}, {5000, 8, 2, ""}}},
		{"sender restart: new epoch, seq back to 1", []step{{5000, 7000, 0, ""}, {6000, 1, 1, ""}, {6000, 2, 2, ""}}},
		{"old epoch replayed after restart", []step{{5000, 7000, 0, ""}, {6000, 1, 1, ""}, {5000, 7001, 2, ReasonReplay}}},
		{"rejected packet leaves state alone", []step{{5000, 9, 0, ""}, {4999, 100, 1, ReasonAHEpochBehind}, {5000, 10, 2, ""}}},
		{"lower epoch while the peer is heard", []step{{5000, 9, 0, ""}, {4000, 1, silence - 1, ReasonAHEpochBehind}}},
		{"lower epoch after silence: restart with the clock behind", []step{{5000, 9, 0, ""}, {4000, 1, silence, ""}, {4000, 2, silence + 1, ""}}},
		{"rejected adverts are not activity", []step{{5000, 9, 0, ""}, {4000, 1, 1, ReasonAHEpochBehind}, {4000, 2, 2, ReasonAHEpochBehind}, {4000, 3, silence, ""}}},
		{"a left epoch is never accepted again, even above", []step{{5000, 9, 0, ""}, {4000, 1, silence, ""}, {5000, 10, silence + 1, ReasonReplay}, {5000, 11, 10 * silence, ReasonReplay}}},
		{"after a step back, an epoch up to the old maximum waits", []step{{5000, 9, 0, ""}, {4000, 1, silence, ""}, {4500, 1, silence + 1, ReasonAHEpochBehind}, {5001, 1, silence + 2, ""}}},
		{"no step back without a window (keepalived rule)", []step{{5000, 9, 0, ""}, {4000, 1, time.Hour, ReasonAHEpochBehind}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r ReplayState
			t0 := time.Unix(1.8e9, 0)
			win := silence
			if strings.HasSuffix(tt.name, "(keepalived rule)") {
				win = 0
			}
			for i, s := range tt.steps {
				next, err := r.AcceptAt(s.spi, s.seq, t0.Add(s.at), win)
				if diff := cmp.Diff(s.want, ReasonOf(err)); diff != "" {
					t.Fatalf("step %d (%d,%d at %v): reason (-want +got):\n%s", i, s.spi, s.seq, s.at, diff)
				}
				if err != nil {
					if next != r {
						t.Fatalf("step %d: a rejected advert changed the state", i)
					}
					continue
				}
				r = next
			}
		})
	}
}

// TestReplayStepBackProperty is the replay rule against a sender that
// restarts with arbitrary epochs (persisted epoch lost, clock anywhere) and
// an attacker who replays any advert ever sent at any moment:
//
//   - within the silence window after the last fresh advert accepted, no
//     replay is accepted, whatever was captured;
//   - a replay of an advert from an epoch the receiver accepted is never
//     accepted (at most ReplaySeenEpochs+1 epochs here);
//   - a fresh advert is accepted if its epoch is above every epoch seen, or
//     its run is already accepted, or the peer has been silent for the
//     window: a restarted peer is never locked out for longer.
func TestReplayStepBackProperty(t *testing.T) {
	const interval = time.Second
	const silence = 3*interval + interval/2
	rapid.Check(t, func(t *rapid.T) {
		type advert struct {
			epoch, seq uint32
		}
		t0 := time.Unix(rapid.Int64Range(0, 4e9).Draw(t, "clock"), 0)
		var (
			rx       ReplayState
			now      time.Duration
			sent     []advert
			genuine  = map[uint32]bool{} // epochs accepted from fresh adverts
			used     = map[uint32]bool{}
			last     time.Duration // last accepted advert
			fresh    time.Duration // last accepted fresh advert
			maxEpoch uint32
		)
		replay := func(label string) {
			if len(sent) == 0 {
				return
			}
			a := sent[rapid.IntRange(0, len(sent)-1).Draw(t, label)]
			next, err := rx.AcceptAt(a.epoch, a.seq, t0.Add(now), silence)
			if err != nil {
				return
			}
			if now-fresh < silence {
				t.Fatalf("at %v, %v after the last fresh advert: replay %+v accepted (state %+v)", now, now-fresh, a, rx)
			}
			if genuine[a.epoch] {
				t.Fatalf("at %v: replay %+v of an accepted epoch accepted (state %+v)", now, a, rx)
			}
			// A replay of a never-accepted epoch (and then the rest of
			// its capture) after silence: the documented residue.
			rx, last = next, now
			maxEpoch = max(maxEpoch, a.epoch)
		}
		for run := range rapid.IntRange(1, ReplaySeenEpochs).Draw(t, "runs") {
			now += time.Duration(rapid.Int64Range(0, int64(3*silence)).Draw(t, "down"))
			epoch := rapid.Uint32Range(256, 1<<20).Filter(func(e uint32) bool { return !used[e] }).Draw(t, "epoch")
			used[epoch] = true
			runAccepted := false
			for seq := range uint32(rapid.IntRange(1, 12).Draw(t, "adverts")) {
				now += interval
				if rapid.Bool().Draw(t, "replay before") {
					replay("replayed")
				}
				a := advert{epoch, seq + 1}
				next, err := rx.AcceptAt(a.epoch, a.seq, t0.Add(now), silence)
				mustAccept := !rx.Valid || epoch > maxEpoch || runAccepted || now-last >= silence
				if mustAccept && err != nil {
					t.Fatalf("run %d at %v: fresh %+v rejected (%v) after %v of silence, state %+v", run, now, a, err, now-last, rx)
				}
				sent = append(sent, a)
				if err == nil {
					rx, last, fresh = next, now, now
					runAccepted = true
					genuine[epoch] = true
					maxEpoch = max(maxEpoch, epoch)
				}
			}
		}
	})
}

// TestSenderRestartProperty: whatever the history, a restarted AHSHA256
// sender (persisted epoch, clock possibly stepped back) is accepted by a
// receiver that saw everything the previous run sent, and nothing the
// previous run sent is accepted afterwards.
func TestSenderRestartProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		base := time.Unix(rapid.Int64Range(1e9, 3e9).Draw(t, "start"), 0)
		ctr := NewAHCounter(rapid.Uint32Range(0, 3e9).Draw(t, "persisted"), base)
		var rx ReplayState
		var sent []AHCounter
		for run := range rapid.IntRange(1, 4).Draw(t, "runs") {
			if run > 0 {
				now := base.Add(time.Duration(rapid.Int64Range(-1e6, 1e6).Draw(t, "step")) * time.Second)
				ctr = NewAHCounter(ctr.Epoch, now) // what the previous run persisted
			}
			for range rapid.IntRange(1, 20).Draw(t, "adverts") {
				ctr = ctr.Next(base)
				var err error
				if rx, err = rx.Accept(ctr.Epoch, ctr.Seq); err != nil {
					t.Fatalf("run %d: fresh advert %+v rejected after %+v", run, ctr, rx)
				}
				sent = append(sent, ctr)
			}
		}
		for _, old := range sent {
			if _, err := rx.Accept(old.Epoch, old.Seq); err == nil {
				t.Fatalf("replay of %+v accepted", old)
			}
		}
	})
}

func TestAHCounterWrap(t *testing.T) {
	now := time.Unix(2e9, 0)
	c := AHCounter{Epoch: 2e9 + 5, Seq: ^uint32(0)}.Next(now)
	if diff := cmp.Diff(AHCounter{Epoch: 2e9 + 6, Seq: 1}, c); diff != "" {
		t.Error(diff)
	}
	if got := NewAHCounter(0, time.Unix(10, 0)).Epoch; got != 256 {
		t.Errorf("epoch below the reserved SPI range: %d", got)
	}
}

// TestKeepalivedSeqAfterRestart: the time floor keeps a restarted sender
// above everything a keepalived peer can have seen (our adverts, and its
// own counter growing at most one per second from there), so the peer's
// "seq > counter" check never opens a window, as long as the average send
// rate stayed below 2 adverts per second.
func TestKeepalivedSeqAfterRestart(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		t0 := time.Unix(rapid.Int64Range(keepalivedSeqBase, keepalivedSeqBase+1e9).Draw(t, "start"), 0)
		var ctr AHCounter
		now := t0
		for range rapid.IntRange(1, 200).Draw(t, "adverts") {
			now = now.Add(time.Duration(rapid.Int64Range(500, 3000).Draw(t, "ms")) * time.Millisecond)
			ctr = ctr.NextKeepalived(now)
		}
		peer := ctr.Seq // keepalived stores the last seq it accepted ...
		// A restart takes at least a second (keepalived itself waits
		// three intervals of at least a second before taking over).
		down := time.Duration(rapid.Int64Range(1000, 1e8).Draw(t, "down ms")) * time.Millisecond
		peer += uint32(down / time.Second) // ... and, as master meanwhile, counts up at most once a second
		restarted := AHCounter{}.NextKeepalived(now.Add(down))
		if restarted.Seq <= peer {
			t.Fatalf("restarted seq %d not above the peer's counter %d", restarted.Seq, peer)
		}
	})
	if got := (AHCounter{Seq: 0xfffffffd}).NextKeepalived(time.Unix(keepalivedSeqBase, 0)).Seq; got != 0xfffffffd {
		t.Errorf("cap: %#x", got)
	}
}
