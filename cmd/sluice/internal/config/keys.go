package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicebus/sluice/internal/bytesize"
	"github.com/sluicebus/sluice/internal/topology"
	"github.com/sluicebus/sluice/pkg/sluice"
)

// checkFile refuses what viper would hide: keys the configuration does not
// know, including those with no value (viper drops them), and topic or
// family names that are not valid as written (viper lowercases them).
func checkFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return err
	}
	return errors.Join(checkKeys(raw, reflect.TypeFor[Config](), "")...)
}

func checkKeys(raw map[string]any, t reflect.Type, prefix string) []error {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if tag := f.Tag.Get("mapstructure"); tag != "" && tag != "-" {
			fields[tag] = f.Type
		}
	}
	if t == reflect.TypeFor[Config]() {
		fields["topics"] = reflect.TypeFor[map[string]topology.Topic]() // decoded on its own
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []error
	for _, k := range keys {
		key := join(prefix, k)
		ft, ok := fields[k]
		if !ok {
			errs = append(errs, &topology.KeyError{Key: key, Msg: "unknown key"})
			continue
		}
		switch {
		case isSection(ft):
			if m, ok := raw[k].(map[string]any); ok {
				errs = append(errs, checkKeys(m, ft, key)...)
			}
		case ft.Kind() == reflect.Map && isSection(ft.Elem()):
			m, _ := raw[k].(map[string]any)
			names := make([]string, 0, len(m))
			for name := range m {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				if err := sluice.ValidateName(name); err != nil {
					errs = append(errs, &topology.KeyError{Key: key + "." + name, Msg: err.Error()})
					continue
				}
				if sub, ok := m[name].(map[string]any); ok {
					errs = append(errs, checkKeys(sub, ft.Elem(), key+"."+name)...)
				}
			}
		}
	}
	return errs
}

// isSection: a struct decoded key by key (not a scalar such as a duration).
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != reflect.TypeFor[time.Duration]()
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

// strictScalars decodes scalars without silent conversions: strings (from
// the environment) are parsed strictly, a fraction is not an integer, and
// booleans and numbers do not turn into each other.
func strictScalars(from, to reflect.Type, data any) (any, error) {
	if to == reflect.TypeFor[bytesize.Size]() || to == reflect.TypeFor[time.Duration]() {
		return data, nil // their own hooks ran before
	}
	v := reflect.ValueOf(data)
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		switch from.Kind() {
		case reflect.String:
			n, err := strconv.ParseInt(v.String(), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not a whole number", v.String())
			}
			return n, nil
		case reflect.Float32, reflect.Float64:
			if f := v.Float(); f != math.Trunc(f) {
				return nil, fmt.Errorf("%v is not a whole number", f)
			}
		case reflect.Bool:
			return nil, fmt.Errorf("%v is not a number", data)
		}
	case reflect.Float32, reflect.Float64:
		switch from.Kind() {
		case reflect.String:
			f, err := strconv.ParseFloat(v.String(), 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not a number", v.String())
			}
			return f, nil
		case reflect.Bool:
			return nil, fmt.Errorf("%v is not a number", data)
		}
	case reflect.Bool:
		switch from.Kind() {
		case reflect.String:
			b, err := strconv.ParseBool(v.String())
			if err != nil {
				return nil, fmt.Errorf("%q is not true or false", v.String())
			}
			return b, nil
		case reflect.Bool:
		default:
			return nil, fmt.Errorf("%v is not true or false", data)
		}
	case reflect.String:
		if from.Kind() != reflect.String {
			return nil, fmt.Errorf("%v is not a string", data)
		}
	}
	return data, nil
}
