package health

import (
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

func echo(t testing.TB, typ icmp.Type, id int, data string) []byte {
	b, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte(data)}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIsEchoReply(t *testing.T) {
	tok := []byte("12345678")
	for _, tc := range []struct {
		name  string
		b     []byte
		proto int
		want  bool
	}{
		{"ours", echo(t, ipv4.ICMPTypeEchoReply, 7, "12345678"), 1, true},
		{"ours v6", echo(t, ipv6.ICMPTypeEchoReply, 7, "12345678"), 58, true},
		{"another id", echo(t, ipv4.ICMPTypeEchoReply, 8, "12345678"), 1, false},
		{"another token", echo(t, ipv4.ICMPTypeEchoReply, 7, "87654321"), 1, false},
		{"our own request looped", echo(t, ipv4.ICMPTypeEcho, 7, "12345678"), 1, false},
		{"v6 request", echo(t, ipv6.ICMPTypeEchoRequest, 7, "12345678"), 58, false},
		{"v6 type under v4", echo(t, ipv6.ICMPTypeEchoReply, 7, "12345678"), 1, false},
		{"truncated", echo(t, ipv4.ICMPTypeEchoReply, 7, "12345678")[:3], 1, false},
		{"empty", nil, 1, false},
	} {
		if got := IsEchoReply(tc.b, tc.proto, 7, tok); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// FuzzIsEchoReply: whatever arrives on the raw socket, the matcher returns
// a verdict (no panic), and only for a reply carrying our id and token.
func FuzzIsEchoReply(f *testing.F) {
	f.Add(echo(f, ipv4.ICMPTypeEchoReply, 7, "12345678"), true)
	f.Add(echo(f, ipv6.ICMPTypeEchoReply, 7, "12345678"), false)
	f.Add([]byte{0, 0, 0, 0, 0, 7, 0, 1}, true)
	f.Fuzz(func(t *testing.T, b []byte, v4 bool) {
		proto := 58
		if v4 {
			proto = 1
		}
		if IsEchoReply(b, proto, 7, []byte("12345678")) {
			m, err := icmp.ParseMessage(proto, b)
			if err != nil {
				t.Fatalf("matched an unparsable message: %v", err)
			}
			e := m.Body.(*icmp.Echo)
			if e.ID != 7 || string(e.Data) != "12345678" {
				t.Fatalf("matched id %d data %q", e.ID, e.Data)
			}
		}
	})
}
