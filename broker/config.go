package broker

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicebus/sluice/internal/alarm"
	"github.com/sluicebus/sluice/internal/tlsconf"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// Config is a broker node's configuration.
type Config struct {
	// Name is the server name (unique within a cluster).
	Name string `mapstructure:"name"`
	// DataDir holds the JetStream file store.
	DataDir string `mapstructure:"data_dir"`
	// Listen is host:port for NATS clients (port -1 picks a free port; empty
	// means in-process clients only).
	Listen string `mapstructure:"listen"`
	// TLS secures the client listener (cert_file and key_file; with
	// verify_clients, clients need a certificate signed by ca_file). Off
	// when empty. In-process clients never use it.
	TLS tlsconf.Config `mapstructure:"tls"`
	// Auth is who may connect as a client and what each may do; no users:
	// any client may do anything (development).
	Auth Auth `mapstructure:"auth"`
	// ReadyTimeout bounds how long New waits for the server and JetStream.
	ReadyTimeout time.Duration `mapstructure:"ready_timeout"`
	// OpsListen serves /healthz, /readyz and /metrics for a standalone broker
	// (`sluice broker`); empty disables it.
	OpsListen string `mapstructure:"ops_listen"`
	// OpsToken lets callers other than the host itself read /v1/status and
	// /v1/alarms on the ops listener (Authorization: Bearer <token>; set it
	// from SLUICE_BROKER_OPS_TOKEN); empty: the host's own callers only
	// (loopback). /healthz, /readyz and /metrics are open to all.
	OpsToken string `mapstructure:"ops_token"`
	// Cluster joins this broker to others; no name means a lone broker.
	Cluster Cluster `mapstructure:"cluster"`
	// LameDuck is how long a stopping broker takes to leave: it hands its
	// stream and consumer leaderships to the others, stops accepting clients,
	// tells connected clients to move, and closes the rest spread over this
	// time. 0 stops at once (a lone broker has nobody to hand over to).
	LameDuck time.Duration `mapstructure:"lame_duck"`
	// ReconcileInterval is how often the broker checks that every declared
	// topic, dead-letter stream and family exists on the bus and recreates
	// what is missing (also at once when JetStream announces a deletion).
	ReconcileInterval time.Duration `mapstructure:"reconcile_interval"`

	// Topics is the topology to provision; filled from the top-level
	// `topics` key by the config loader.
	Topics map[string]topology.Topic `mapstructure:"-"`
	// Alarms are the thresholds (disk use); filled from the top-level
	// `alarms` key.
	Alarms alarm.Config `mapstructure:"-"`
	// SharedAlarms is set by a program that runs the broker beside a
	// gateway on one registry (`sluice dev`: one node, one alarm manager):
	// the broker keeps no alarm manager of its own, since two would
	// register the same metrics, and the program runs WatchAlarms on the
	// gateway's. Then Alarms() is nil, Run watches no alarms, and its ops
	// listener serves no /v1/alarms. Not a file setting.
	SharedAlarms bool `mapstructure:"-"`
}

// Cluster is how brokers find each other: NATS routes between them, over
// which JetStream replicates topics with Raft.
type Cluster struct {
	// Name is shared by every broker of the cluster; empty: not clustered.
	Name string `mapstructure:"name"`
	// Listen is host:port for routes from the other brokers (port -1 picks one).
	Listen string `mapstructure:"listen"`
	// Routes are the other brokers' route URLs (nats-route://host:port).
	Routes []string `mapstructure:"routes"`
	// Advertise is the route address this broker gives the others (they
	// connect to it when they learn of it); empty: its listen address. Set
	// it behind NAT or in containers.
	Advertise string `mapstructure:"advertise"`
	// Size is how many brokers the cluster has (the replicas a topic may
	// ask for); 0 counts this broker and its routes.
	Size int `mapstructure:"size"`
	// TLS secures the routes, mutually: each broker verifies the other's
	// certificate against ca_file, as server and as client (verify_clients
	// is implied). Off when empty; then on every broker of the cluster.
	TLS tlsconf.Config `mapstructure:"tls"`
	// User and Password authenticate routes: a broker accepts a route only
	// with them and dials its routes with them. The same on every broker;
	// empty: routes unauthenticated. Set the password from the environment
	// (SLUICE_BROKER_CLUSTER_PASSWORD) rather than in the file.
	User     string `mapstructure:"user"`
	Password string `mapstructure:"password"`
}

// Enabled reports whether the broker is clustered.
func (c Cluster) Enabled() bool { return c.Name != "" }

// size is the expected number of brokers.
func (c Cluster) size() int {
	if !c.Enabled() {
		return 1
	}
	if c.Size > 0 {
		return c.Size
	}
	return len(c.Routes) + 1
}

// minOpsToken is the shortest ops token accepted.
const minOpsToken = 16

// DefaultConfig returns the single-node development broker.
func DefaultConfig() Config {
	return Config{
		Name:         "sluice-dev",
		DataDir:      "data/broker",
		Listen:       "127.0.0.1:4222",
		ReadyTimeout: 30 * time.Second,
		OpsListen:    "",
		Cluster:      Cluster{Routes: []string{}},
		Auth:         Auth{Users: []User{}},
		LameDuck:     0,
		Alarms:       alarm.DefaultConfig(),
		// A few seconds: a family missing that long stores nothing for it
		// (its gateways refuse the topic meanwhile); each check costs one
		// JetStream info request per stream and family.
		ReconcileInterval: 5 * time.Second,
	}
}

// Validate reports every problem in c.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, &topology.KeyError{Key: "broker.name", Msg: "must not be empty"})
	}
	if c.DataDir == "" {
		errs = append(errs, &topology.KeyError{Key: "broker.data_dir", Msg: "must not be empty"})
	}
	if c.Listen != "" {
		if _, _, err := splitHostPort(c.Listen); err != nil {
			errs = append(errs, &topology.KeyError{Key: "broker.listen", Msg: err.Error()})
		}
	}
	if err := c.TLS.ValidateServer("broker.tls"); err != nil {
		errs = append(errs, err)
	}
	if err := c.Auth.validate(c.Topics); err != nil {
		errs = append(errs, err)
	}
	if c.Cluster.Enabled() {
		if _, _, err := splitHostPort(c.Cluster.Listen); err != nil {
			errs = append(errs, &topology.KeyError{Key: "broker.cluster.listen", Msg: err.Error()})
		}
		if len(c.Cluster.Routes) == 0 {
			errs = append(errs, &topology.KeyError{Key: "broker.cluster.routes", Msg: "a cluster needs the routes of the other brokers"})
		}
		if err := sluice.ValidateName(strings.ToLower(c.Cluster.Name)); err != nil {
			errs = append(errs, &topology.KeyError{Key: "broker.cluster.name", Msg: err.Error()})
		}
		if err := c.Cluster.TLS.ValidateServer("broker.cluster.tls"); err != nil {
			errs = append(errs, err)
		}
		if c.Cluster.TLS.Enabled() && c.Cluster.TLS.CAFile == "" {
			errs = append(errs, &topology.KeyError{Key: "broker.cluster.tls.ca_file",
				Msg: "route TLS is mutual: brokers verify each other against this CA"})
		}
		if c.Cluster.User == "" && c.Cluster.Password != "" {
			errs = append(errs, &topology.KeyError{Key: "broker.cluster.user", Msg: "needed with broker.cluster.password"})
		}
		if c.Cluster.User != "" && c.Cluster.Password == "" {
			errs = append(errs, &topology.KeyError{Key: "broker.cluster.password",
				Msg: "needed with broker.cluster.user (e.g. from SLUICE_BROKER_CLUSTER_PASSWORD)"})
		}
		if c.Cluster.User == "" && (c.Cluster.TLS.Enabled() || c.Auth.Enabled()) {
			// Route TLS verifies a peer against the CA only: any
			// certificate the CA signed (a client's, too) would be taken
			// as a route, and a route carries every account's traffic.
			errs = append(errs, &topology.KeyError{Key: "broker.cluster.user",
				Msg: "a cluster with route TLS or client authentication needs route credentials (broker.cluster.user and broker.cluster.password): without them any certificate from the CA, or any process reaching the route port, joins as a broker"})
		}
		if strings.ContainsAny(c.Cluster.User, ":@/") {
			errs = append(errs, &topology.KeyError{Key: "broker.cluster.user", Msg: "must not contain ':', '@' or '/'"})
		}
		for i, r := range c.Cluster.Routes {
			if u, err := url.Parse(r); err == nil && u.User != nil {
				errs = append(errs, &topology.KeyError{Key: fmt.Sprintf("broker.cluster.routes[%d]", i),
					Msg: "credentials come from broker.cluster.user and broker.cluster.password, not the URL"})
			}
		}
	}
	if c.OpsToken != "" && len(c.OpsToken) < minOpsToken {
		errs = append(errs, &topology.KeyError{Key: "broker.ops_token", Msg: fmt.Sprintf("must be at least %d characters", minOpsToken)})
	}
	if c.LameDuck < 0 {
		errs = append(errs, &topology.KeyError{Key: "broker.lame_duck", Msg: "must not be negative"})
	}
	if c.ReadyTimeout <= 0 {
		errs = append(errs, &topology.KeyError{Key: "broker.ready_timeout", Msg: "must be positive"})
	}
	if c.ReconcileInterval <= 0 {
		errs = append(errs, &topology.KeyError{Key: "broker.reconcile_interval", Msg: "must be positive"})
	}
	for _, name := range topology.Names(c.Topics) {
		t := c.Topics[name]
		if err := t.Validate("topics." + name); err != nil {
			errs = append(errs, err)
		}
		if n := c.Cluster.size(); t.Replicas > n {
			errs = append(errs, &topology.KeyError{Key: "topics." + name + ".replicas",
				Msg: fmt.Sprintf("%d replicas need a cluster of at least %d brokers; this one has %d", t.Replicas, t.Replicas, n)})
		}
	}
	return errors.Join(errs...)
}

// splitHostPort accepts host:port where port may be -1 (random).
func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("want host:port, got %q", hp)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", hp)
	}
	return host, port, nil
}
