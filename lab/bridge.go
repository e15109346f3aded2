package lab

import "fmt"

// Bridge is a Linux bridge inside a switch namespace; hosts are plugged
// into it with veth pairs. STP is off and the forward delay is zero so a
// port forwards as soon as it is up; multicast snooping is off so VRRP
// adverts (224.0.0.18, ff02::12) always flood to every port.
type Bridge struct {
	Switch *Netns
	Name   string
	ports  int
}

// NewBridge creates bridge name (<= 15 chars) in the switch namespace sw,
// up.
func NewBridge(sw *Netns, name string) (*Bridge, error) {
	if err := CheckIfName(name); err != nil {
		return nil, err
	}
	if err := sw.ip("link", "add", name, "type", "bridge",
		"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"); err != nil {
		return nil, err
	}
	if err := sw.LinkUp(name); err != nil {
		return nil, err
	}
	return &Bridge{Switch: sw, Name: name}, nil
}

// Connect plugs ifName of host into the bridge: a veth pair whose switch
// end is named "<bridge>p<n>" (or portName if given) and enslaved to the
// bridge. Both ends are up. It returns the switch-side port name, which
// SetLinkDown-style helpers can use to cut the host off from the switch
// side.
func (b *Bridge) Connect(host *Netns, ifName, portName string) (string, error) {
	if portName == "" {
		portName = fmt.Sprintf("%sp%d", b.Name, b.ports)
	}
	if err := Veth(b.Switch, portName, host, ifName); err != nil {
		return "", err
	}
	if err := b.Switch.ip("link", "set", portName, "master", b.Name); err != nil {
		return "", err
	}
	b.ports++
	return portName, nil
}
