package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/go-viper/mapstructure/v2"

	"github.com/sluicebus/sluice/internal/topology"
)

// notConfig are SLUICE_* variables that other parts of Sluice read, not the
// configuration: they are left alone rather than refused as unknown.
var notConfig = map[string]string{
	"SLUICE_API_KEY":         "sluice produce, status, dlq: the API key",
	"SLUICE_HEALTH_URL":      "sluice health: the URL to probe",
	"SLUICE_BIN":             "deploy/demo-secrets.sh",
	"SLUICE_IMAGE":           "deploy/docker-compose.yml",
	"SLUICE_DEMO_GATEWAY_1":  "deploy/docker-compose.yml",
	"SLUICE_DEMO_GATEWAY_2":  "deploy/docker-compose.yml",
	"SLUICE_DEMO_NATS_1":     "deploy/docker-compose.yml",
	"SLUICE_DEMO_NATS_2":     "deploy/docker-compose.yml",
	"SLUICE_DEMO_NATS_3":     "deploy/docker-compose.yml",
	"SLUICE_DEMO_RATE":       "deploy/docker-compose.yml",
	"SLUICE_DEMO_DURATION":   "deploy/docker-compose.yml",
	"SLUICE_CHAOS_TABLE":     "make chaos",
	"SLUICE_FUZZ_BROKER_DIR": "gateway's fuzz test",
}

// EnvName is the environment variable that overrides key:
// topics.orders.max_messages is SLUICE_TOPICS_ORDERS_MAX_MESSAGES (a '-'
// in a topic or family name is a '_' there too).
func EnvName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// EnvError is an environment variable that does not configure: it names
// no key, or its value does not fit the key it names.
type EnvError struct {
	Var string // SLUICE_...
	Key string // the key it overrides; empty when it names none
	Err error
}

func (e *EnvError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("environment %s: %v", e.Var, e.Err)
	}
	msg := e.Err.Error()
	if ke, ok := e.Err.(*topology.KeyError); ok && ke.Key == e.Key {
		msg = ke.Msg
	}
	return fmt.Sprintf("environment %s (key %s): %s", e.Var, e.Key, msg)
}

func (e *EnvError) Unwrap() error { return e.Err }

// errUnknownEnv: a SLUICE_* variable that names no key.
var errUnknownEnv = errors.New("unknown variable: it names no configuration key")

// envKey is a key an environment variable may set, and its Go type.
type envKey struct {
	key string
	typ reflect.Type
}

// override is one SLUICE_* variable applied to its key.
type override struct {
	name, key, value string
}

// envKeys maps the variable of every key that may be set from the
// environment to the key: every leaf of the sections, and every setting of
// the topics and families declared in topics (the raw tree the file gave,
// or the defaults'). Two keys with one variable ("a-b" and "a_b") are left
// out: the variable is refused as ambiguous.
func envKeys(topics map[string]any) (keys map[string]envKey, ambiguous map[string][]string) {
	keys, ambiguous = map[string]envKey{}, map[string][]string{}
	add := func(key string, typ reflect.Type) {
		name := EnvName(key)
		if prev, ok := keys[name]; ok {
			ambiguous[name] = append(ambiguous[name], prev.key)
			delete(keys, name)
		}
		if _, ok := ambiguous[name]; ok {
			ambiguous[name] = append(ambiguous[name], key)
			return
		}
		keys[name] = envKey{key: key, typ: typ}
	}
	for key, typ := range leafTypes(reflect.TypeFor[Config](), "") {
		add(key, typ)
	}
	for _, tname := range sortedKeys(topics) {
		prefix := "topics." + tname
		for key, typ := range leafTypes(reflect.TypeFor[topology.Topic](), prefix) {
			if key != prefix+".families" {
				add(key, typ)
			}
		}
		tm, _ := topics[tname].(map[string]any)
		fams, _ := tm["families"].(map[string]any)
		for _, fname := range sortedKeys(fams) {
			for key, typ := range leafTypes(reflect.TypeFor[topology.Family](), prefix+".families."+fname) {
				add(key, typ)
			}
		}
	}
	return keys, ambiguous
}

// leafTypes lists the keys of a config struct type and their types, as
// flatten lists their values.
func leafTypes(t reflect.Type, prefix string) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		key := join(prefix, tag)
		if f.Type.Kind() == reflect.Struct {
			for k, ft := range leafTypes(f.Type, key) {
				out[k] = ft
			}
			continue
		}
		out[key] = f.Type
	}
	return out
}

// overrides reads the SLUICE_* variables of environ (os.Environ's form):
// each must name a key (or be one notConfig lists) and hold a value of the
// key's type; every variable that does not is reported. An empty value
// leaves its key as it is.
func overrides(environ []string, topics map[string]any) ([]override, error) {
	keys, ambiguous := envKeys(topics)
	var out []override
	var errs []error
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix+"_") {
			continue
		}
		if _, ok := notConfig[name]; ok {
			continue
		}
		if ks, ok := ambiguous[name]; ok {
			slices.Sort(ks)
			errs = append(errs, &EnvError{Var: name, Err: fmt.Errorf("names more than one key (%s): rename a topic or family, or set the key in the file", strings.Join(ks, ", "))})
			continue
		}
		k, ok := keys[name]
		if !ok {
			errs = append(errs, &EnvError{Var: name, Err: unknownEnvErr(name)})
			continue
		}
		if value == "" {
			continue
		}
		if err := checkValue(value, k.typ); err != nil {
			errs = append(errs, &EnvError{Var: name, Key: k.key, Err: err})
			continue
		}
		out = append(out, override{name: name, key: k.key, value: value})
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return out, errors.Join(errs...)
}

// unknownEnvErr says why name configures nothing; a topic's or family's
// variable can only set what the file (or the defaults) declares.
func unknownEnvErr(name string) error {
	if strings.HasPrefix(name, EnvPrefix+"_TOPICS_") {
		return fmt.Errorf("%w (a topic's or family's variable sets a key of a topic and family the configuration declares; declare new ones in the file)", errUnknownEnv)
	}
	return errUnknownEnv
}

// checkValue decodes value as the file's decoder would into a value of
// typ, and returns why it does not fit, in one line.
func checkValue(value string, typ reflect.Type) error {
	holder := reflect.New(reflect.StructOf([]reflect.StructField{{
		Name: "V", Type: typ, Tag: `mapstructure:"v"`,
	}}))
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:     holder.Interface(),
		ZeroFields: true,
		DecodeHook: decodeHooks(),
	})
	if err != nil {
		return err
	}
	err = dec.Decode(map[string]any{"v": value})
	if err == nil {
		return nil
	}
	var de *mapstructure.DecodeError
	if errors.As(err, &de) && de.Unwrap() != nil {
		err = de.Unwrap()
	}
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}

// applyTopics sets the topics' overrides in the raw topics tree (a copy).
func applyTopics(tree map[string]any, ovs []override) map[string]any {
	out := deepCopy(tree)
	for _, o := range ovs {
		rest, ok := strings.CutPrefix(o.key, "topics.")
		if !ok {
			continue
		}
		path := strings.Split(rest, ".")
		m := out
		for _, p := range path[:len(path)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[path[len(path)-1]] = o.value
	}
	return out
}

func deepCopy(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			v = deepCopy(sub)
		}
		out[k] = v
	}
	return out
}

// topicTree is topics as the raw tree a file would give, so that defaults
// and files take the same environment overrides.
func topicTree(topics map[string]topology.Topic) map[string]any {
	tree := map[string]any{}
	for name, t := range topics {
		tm := flatten(reflect.ValueOf(t), "")
		delete(tm, "families")
		fams := map[string]any{}
		for fname, f := range t.Families {
			fams[fname] = flatten(reflect.ValueOf(f), "")
		}
		tm["families"] = fams
		tree[name] = tm
	}
	return tree
}

// nameVariables rewrites the key errors of err whose key an environment
// variable set so that they name the variable too.
func nameVariables(err error, byKey map[string]string) error {
	if err == nil || len(byKey) == 0 {
		return err
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok && isJoin(err, joined.Unwrap()) {
		errs := joined.Unwrap()
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = nameVariables(e, byKey)
		}
		return errors.Join(out...)
	}
	if ke, ok := err.(*topology.KeyError); ok {
		if name, ok := byKey[ke.Key]; ok {
			return &EnvError{Var: name, Key: ke.Key, Err: ke}
		}
	}
	return err
}

// isJoin: err is errors.Join(errs...), not another error wrapping several
// (whose own words rebuilding would lose).
func isJoin(err error, errs []error) bool {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return err.Error() == strings.Join(msgs, "\n")
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
