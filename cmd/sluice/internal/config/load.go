package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/sluicebus/sluice/internal/topology"
)

// EnvPrefix prefixes environment overrides: SLUICE_GATEWAY_LISTEN sets gateway.listen.
const EnvPrefix = "SLUICE"

// Error is a configuration that must not start: it names the file and, in
// Err, every offending key.
type Error struct {
	File string
	Err  error
}

func (e *Error) Error() string {
	file := e.File
	if file == "" {
		file = "(built-in defaults)"
	}
	return fmt.Sprintf("config %s: %v", file, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Load reads the file at path (none when empty) over DefaultConfig, applies
// SLUICE_* environment overrides and the changed flags bound in flagKeys
// (flag name -> config key), and validates the result for every role.
func Load(path string, flags *pflag.FlagSet, flagKeys map[string]string) (Config, error) {
	return LoadFor(RoleAll, path, flags, flagKeys)
}

// LoadFor is Load validating for the roles the process runs only (unknown
// keys and bad values are refused in every section all the same).
func LoadFor(roles Role, path string, flags *pflag.FlagSet, flagKeys map[string]string) (Config, error) {
	cfg, err := load(roles, path, flags, flagKeys)
	if err != nil {
		return Config{}, &Error{File: path, Err: err}
	}
	return cfg, nil
}

func load(roles Role, path string, flags *pflag.FlagSet, flagKeys map[string]string) (Config, error) {
	v := viper.New()
	def := DefaultConfig()
	for key, val := range flatten(reflect.ValueOf(def), "") {
		v.SetDefault(key, val)
	}
	if path != "" {
		if err := checkFile(path); err != nil {
			return Config{}, err
		}
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return Config{}, err
		}
	}
	// The topics as the file's raw tree (a family declared with no
	// settings, "audit: {}", is kept), else the defaults' as the same tree:
	// environment overrides of topics work alike with and without a file.
	rawTopics := v.Get("topics")
	if rawTopics == nil {
		rawTopics = topicTree(def.Topics)
	}
	tree, _ := rawTopics.(map[string]any)
	// Variables are bound one by one, not with AutomaticEnv: viper would
	// ignore a variable naming no key, or a topic's with no file.
	ovs, err := overrides(os.Environ(), tree)
	if err != nil {
		return Config{}, err
	}
	byKey := make(map[string]string, len(ovs))
	for _, o := range ovs {
		byKey[o.key] = o.name
		if !strings.HasPrefix(o.key, "topics.") {
			if err := v.BindEnv(o.key, o.name); err != nil {
				return Config{}, err
			}
		}
	}
	if tree != nil {
		rawTopics = applyTopics(tree, ovs)
	}
	for name, key := range flagKeys {
		f := flags.Lookup(name)
		if f == nil {
			return Config{}, fmt.Errorf("flag --%s bound to %s does not exist", name, key)
		}
		if err := v.BindPFlag(key, f); err != nil {
			return Config{}, err
		}
	}

	settings := v.AllSettings()
	delete(settings, "topics")
	cfg := def
	if err := decode(settings, &cfg, ""); err != nil {
		return Config{}, err
	}
	topics, err := decodeTopics(rawTopics)
	if err != nil {
		return Config{}, nameVariables(err, byKey)
	}
	cfg.Topics = topics
	if err := cfg.ValidateFor(roles); err != nil {
		return Config{}, nameVariables(err, byKey)
	}
	return cfg, nil
}

func decodeTopics(raw any) (map[string]topology.Topic, error) {
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, &topology.KeyError{Key: "topics", Msg: fmt.Sprintf("must be a map of topic name to settings, got %T", raw)}
	}
	topics := make(map[string]topology.Topic, len(m))
	var errs []error
	for name, rt := range m {
		prefix := "topics." + name
		t := topology.DefaultTopic()
		t.Name = name
		tm, err := asMap(rt, prefix)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rawFams, hasFams := tm["families"]
		delete(tm, "families")
		if err := decode(tm, &t, prefix); err != nil {
			errs = append(errs, err)
			continue
		}
		t.Families = map[string]topology.Family{}
		if hasFams {
			fm, err := asMap(rawFams, prefix+".families")
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for fname, rf := range fm {
				fprefix := prefix + ".families." + fname
				f := topology.DefaultFamily()
				f.Name = fname
				ffm, err := asMap(rf, fprefix)
				if err == nil {
					err = decode(ffm, &f, fprefix)
				}
				if err != nil {
					errs = append(errs, err)
					continue
				}
				t.Families[fname] = f
			}
		}
		topics[name] = t
	}
	return topics, errors.Join(errs...)
}

func asMap(raw any, key string) (map[string]any, error) {
	switch m := raw.(type) {
	case nil:
		return map[string]any{}, nil
	case map[string]any:
		return maps.Clone(m), nil
	default:
		return nil, &topology.KeyError{Key: key, Msg: fmt.Sprintf("must be a map, got %T", raw)}
	}
}

// decode decodes input onto out (which already holds defaults), refusing
// unknown keys and reporting bad values under their dotted key.
func decode(input map[string]any, out any, prefix string) error {
	var md mapstructure.Metadata
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:     out,
		Metadata:   &md,
		ZeroFields: true, // a list in the file replaces the default list
		DecodeHook: decodeHooks(),
	})
	if err != nil {
		return err
	}
	join := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	if err := dec.Decode(input); err != nil {
		return fmt.Errorf("%s%w", keyPrefix(prefix), err)
	}
	if len(md.Unused) > 0 {
		slices.Sort(md.Unused)
		errs := make([]error, 0, len(md.Unused))
		for _, k := range md.Unused {
			errs = append(errs, &topology.KeyError{Key: join(k), Msg: "unknown key"})
		}
		return errors.Join(errs...)
	}
	return nil
}

// decodeHooks are how files and environment values become Go values.
func decodeHooks() mapstructure.DecodeHookFunc {
	return mapstructure.ComposeDecodeHookFunc(
		durationNeedsUnit,
		parseDuration,
		mapstructure.TextUnmarshallerHookFunc(),
		stringToList,  // lists from the environment
		strictScalars, // numbers and booleans from the environment
	)
}

// stringToList splits a string for a list at its commas: "2s,4s" from
// the environment is a list of durations (mapstructure's own hook makes
// lists of strings only).
func stringToList(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice {
		return data, nil
	}
	s := data.(string)
	if s == "" {
		return []string{}, nil
	}
	return strings.Split(s, ","), nil
}

func keyPrefix(prefix string) string {
	if prefix == "" {
		return ""
	}
	return prefix + ": "
}

// durationNeedsUnit refuses bare numbers for durations ("30" is 30ns, which
// nobody means); 0 stays allowed.
func durationNeedsUnit(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	switch from.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		if reflect.ValueOf(data).IsZero() {
			return time.Duration(0), nil
		}
		if _, ok := data.(time.Duration); ok {
			return data, nil
		}
		return nil, fmt.Errorf("duration %v needs a unit, e.g. \"%vs\" or \"%vms\"", data, data, data)
	}
	return data, nil
}

// parseDuration reads "500ms", "30s", "2m" and quotes what it could not read.
func parseDuration(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() || from.Kind() != reflect.String {
		return data, nil
	}
	d, err := time.ParseDuration(data.(string))
	if err != nil {
		return nil, fmt.Errorf("invalid duration %q (want e.g. 500ms, 30s, 2m)", data)
	}
	return d, nil
}

// flatten lists the leaf keys of a config struct with their default values,
// so that viper knows every key (environment overrides need that).
func flatten(v reflect.Value, prefix string) map[string]any {
	out := map[string]any{}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct {
			for k, val := range flatten(fv, key) {
				out[k] = val
			}
			continue
		}
		out[key] = fv.Interface()
	}
	return out
}
