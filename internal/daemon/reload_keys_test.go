package daemon

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/config"
)

// TestReloadSeesEveryKey changes every setting of the configuration, one
// leaf at a time, and checks that a reload would act on it: restart the
// instances (electionChanges), apply it in place (inPlaceChanges), or move
// the priority (the role). A key that none of them compares would be taken
// into d.cfg and shown in the status while the running daemon still used
// the old value: the liveness keys were so until this test, and `peer`
// with DB sync off (the peer view polls it). Two bases: everything on,
// and the replications and liveness off (a comparison may depend on them).
func TestReloadSeesEveryKey(t *testing.T) {
	on := loopConfig(t, t.TempDir(), "master", loopAddr2, true)
	off := *on
	off.Conntrack.Enabled, off.DBSync.Enabled, off.Liveness.Enabled = false, false, false
	for name, base := range map[string]*config.Config{"all on": on, "replications and liveness off": &off} {
		unseen, n := unseenSettings(base, reloadSees)
		for _, u := range unseen {
			t.Errorf("%s: %s: a reload neither restarts, applies nor re-prioritises", name, u)
		}
		if n < 60 {
			t.Fatalf("%s: only %d settings changed: the walk missed most of the configuration", name, n)
		}
		t.Logf("%s: %d settings changed one at a time", name, n)
	}
}

// The walk finds a setting a reload ignores: with the liveness section
// hidden from the comparisons, every liveness leaf and nothing else.
func TestReloadSeesEveryKeyFindsAnIgnoredKey(t *testing.T) {
	base := loopConfig(t, t.TempDir(), "master", loopAddr2, true)
	blind := func(old, cur *config.Config) []string {
		c := *cur
		c.Liveness = old.Liveness
		return reloadSees(old, &c)
	}
	unseen, _ := unseenSettings(base, blind)
	var want []string
	for _, m := range leafChanges(reflect.ValueOf(base.Liveness), "Liveness") {
		want = append(want, m.path)
	}
	var got []string
	for _, u := range unseen {
		got = append(got, strings.Fields(u)[0])
	}
	if len(want) < 8 || !slices.Equal(got, want) {
		t.Errorf("settings found unseen: %v, want the liveness leaves %v", got, want)
	}
}

// reloadSees is what a reload does with a change from old to cur: the keys
// that restart the instances, those applied in place, and "role" when the
// priority moves.
func reloadSees(old, cur *config.Config) []string {
	got := append(electionChanges(old, cur), inPlaceChanges(old, cur)...)
	if cur.Priority() != old.Priority() {
		got = append(got, "role")
	}
	return got
}

// unseenSettings changes every setting of base, one leaf at a time, and
// returns those classify reports nothing for ("path (from to to)"), and
// how many it changed.
func unseenSettings(base *config.Config, classify func(old, cur *config.Config) []string) (unseen []string, changed int) {
	// Not settings: where the file was read from, and what was found in it.
	notSettings := []string{"File", "ConfigDir", "Warnings"}
	// Leaves whose change needs nothing: VRIDExplicit says whether the
	// VRID was written or derived, and the VRID itself is compared.
	inert := []string{"VIPs.VRIDExplicit"}
	typ := reflect.TypeOf(*base)
	for i := range typ.NumField() {
		f := typ.Field(i)
		if slices.Contains(notSettings, f.Name) {
			continue
		}
		for _, m := range leafChanges(reflect.ValueOf(*base).Field(i), f.Name) {
			if slices.Contains(inert, m.path) {
				continue
			}
			changed++
			cur := *base
			reflect.ValueOf(&cur).Elem().Field(i).Set(m.value)
			if len(classify(base, &cur)) == 0 {
				unseen = append(unseen, fmt.Sprintf("%s (%v to %v)", m.path, m.from, m.to))
			}
		}
	}
	return unseen, changed
}

// leafChange is one setting changed: v is the top-level field's new value.
type leafChange struct {
	path     string
	value    reflect.Value
	from, to any
}

// leafChanges returns, for each leaf setting under v (a top-level field's
// value, named path), a copy of v with only that leaf changed.
func leafChanges(v reflect.Value, path string) []leafChange {
	changed, ok := otherValue(v)
	if ok {
		return []leafChange{{path: path, value: changed, from: v.Interface(), to: changed.Interface()}}
	}
	var out []leafChange
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				continue
			}
			for _, m := range leafChanges(v.Field(i), path+"."+v.Type().Field(i).Name) {
				c := reflect.New(v.Type()).Elem()
				c.Set(v)
				c.Field(i).Set(m.value)
				out = append(out, leafChange{path: m.path, value: c, from: m.from, to: m.to})
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			// One more element of the zero value, then its leaves changed.
			one := reflect.Append(reflect.MakeSlice(v.Type(), 0, 1), reflect.Zero(v.Type().Elem()))
			out = append(out, leafChange{path: path, value: one, from: "empty", to: "one element"})
			return out
		}
		for _, m := range leafChanges(v.Index(0), path) {
			c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
			reflect.Copy(c, v)
			c.Index(0).Set(m.value)
			out = append(out, leafChange{path: m.path, value: c, from: m.from, to: m.to})
		}
	case reflect.Map:
		c := reflect.MakeMap(v.Type())
		if v.Len() == 0 {
			c.SetMapIndex(reflect.Zero(v.Type().Key()), reflect.Zero(v.Type().Elem()))
		}
		out = append(out, leafChange{path: path, value: c, from: v.Len(), to: c.Len()})
	case reflect.Pointer:
		c := reflect.Zero(v.Type())
		if v.IsNil() {
			c = reflect.New(v.Type().Elem())
		}
		out = append(out, leafChange{path: path, value: c, from: v.IsNil(), to: c.IsNil()})
	default:
		// A kind the walk cannot change would hide a setting.
		panic(fmt.Sprintf("leafChanges: %s is a %s, which the walk does not change", path, v.Kind()))
	}
	return out
}

// otherValue returns a value of v's type that differs from v, for a leaf
// (a scalar or an address); ok false for a composite to walk into.
func otherValue(v reflect.Value) (reflect.Value, bool) {
	switch x := v.Interface().(type) {
	case config.Role: // another valid role: the priority moves
		if x == config.RoleMaster {
			return reflect.ValueOf(config.RoleBackup), true
		}
		return reflect.ValueOf(config.RoleMaster), true
	case netip.Addr:
		if x.IsValid() {
			return reflect.ValueOf(x.Next()), true
		}
		return reflect.ValueOf(netip.MustParseAddr("192.0.2.99")), true
	case netip.Prefix:
		return reflect.ValueOf(netip.MustParsePrefix("198.51.100.7/24")), x != netip.MustParsePrefix("198.51.100.7/24")
	case time.Duration:
		return reflect.ValueOf(x + time.Millisecond), true
	}
	c := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.Bool:
		c.SetBool(!v.Bool())
	case reflect.String:
		c.SetString(v.String() + "x")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		c.SetInt(v.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		c.SetUint(v.Uint() + 1)
	default:
		return reflect.Value{}, false
	}
	return c, true
}
