package status

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/vrrp"
)

// HeardKey counts each version on its own series, the cached counters
// included, and ignores adverts without a version (no AH).
func TestHeardKeyCountsByVersion(t *testing.T) {
	m := NewMetrics()
	for _, v := range []vrrp.KeyVersion{vrrp.KeyV2, 0, vrrp.KeyV1, vrrp.KeyV2, vrrp.KeyV2, 0} {
		m.HeardKey(v)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "muros_had_vrrp_ah_key_accepted_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				got[l.GetName()+"="+l.GetValue()] = s.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{"version=" + vrrp.KeyV1.String(): 1, "version=" + vrrp.KeyV2.String(): 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AH adverts by key version (-want +got):\n%s", diff)
	}
}
