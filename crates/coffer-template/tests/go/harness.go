// Renders every case of ../cases.json with Go's text/template and the consul-template
// functions re-implemented below exactly as consul-template defines them, and prints the
// outputs as JSON (the content of ../golden.json). Run by tests/go_differential.rs when a Go
// toolchain is present:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run harness.go < ../cases.json
//
// toYAML needs gopkg.in/yaml.v2 (Debian: golang-gopkg-yaml.v2-dev).
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"text/template"

	"gopkg.in/yaml.v2"
)

// Secret mirrors consul-template's dependency.Secret.
type Secret struct {
	RequestID     string
	LeaseID       string
	LeaseDuration int
	Renewable     bool
	Data          map[string]interface{}
	Warnings      []string
	Auth          *struct{}
	WrapInfo      *struct{}
}

type fixtureSecret struct {
	LeaseID       string                 `json:"lease_id"`
	LeaseDuration int                    `json:"lease_duration"`
	Renewable     bool                   `json:"renewable"`
	Data          map[string]interface{} `json:"data"`
}

type testCase struct {
	Name       string           `json:"name"`
	Tmpl       string           `json:"tmpl"`
	Data       *json.RawMessage `json:"data"`
	MissingKey bool             `json:"missingkey"`
}

type suite struct {
	Secrets map[string]json.RawMessage `json:"secrets"`
	Env     map[string]string          `json:"env"`
	Files   map[string]string          `json:"files"`
	Cases   []testCase                 `json:"cases"`
}

type result struct {
	Name string  `json:"name"`
	Out  *string `json:"out,omitempty"`
	Err  *string `json:"err,omitempty"`
}

// decode reads JSON as Vault's API client does: numbers stay json.Number.
func decode(raw []byte, v interface{}) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	return d.Decode(v)
}

func in(l, v interface{}) (bool, error) {
	lv := reflect.ValueOf(l)
	vv := reflect.ValueOf(v)
	switch lv.Kind() {
	case reflect.Array, reflect.Slice:
		var interfaceSlice []interface{}
		if reflect.TypeOf(l).Elem().Kind() == reflect.Interface {
			interfaceSlice = l.([]interface{})
		}
		for i := 0; i < lv.Len(); i++ {
			var lvv reflect.Value
			if interfaceSlice != nil {
				lvv = reflect.ValueOf(interfaceSlice[i])
			} else {
				lvv = lv.Index(i)
			}
			if !lvv.IsValid() || !vv.IsValid() || lvv.Type() != vv.Type() {
				continue
			}
			switch lvv.Kind() {
			case reflect.String:
				if vv.String() == lvv.String() {
					return true, nil
				}
			case reflect.Int, reflect.Int64:
				if vv.Int() == lvv.Int() {
					return true, nil
				}
			case reflect.Float64:
				if vv.Float() == lvv.Float() {
					return true, nil
				}
			case reflect.Bool:
				if vv.Bool() == lvv.Bool() {
					return true, nil
				}
			}
		}
	case reflect.String:
		if vv.IsValid() && vv.Type() == lv.Type() && strings.Contains(lv.String(), vv.String()) {
			return true, nil
		}
	}
	return false, nil
}

func decoder(enc *base64.Encoding, name string) func(string) (string, error) {
	return func(v string) (string, error) {
		b, err := enc.DecodeString(v)
		if err != nil {
			return "", fmt.Errorf("%s: %s", name, err)
		}
		return string(b), nil
	}
}

func funcs(s *suite) template.FuncMap {
	return template.FuncMap{
		"secret": func(args ...string) (*Secret, error) {
			if len(args) == 0 {
				return nil, errors.New("missing path")
			}
			path := args[0]
			params := map[string]interface{}{}
			for i, a := range args[1:] {
				kv := strings.SplitN(a, "=", 2)
				if len(kv) != 2 {
					return nil, fmt.Errorf("%s: argument %d is not of the form key=value", path, i+2)
				}
				params[kv[0]] = kv[1]
			}
			if len(params) > 0 {
				return &Secret{LeaseID: "write", Data: params}, nil
			}
			raw, ok := s.Secrets[path]
			if !ok {
				return nil, fmt.Errorf("%s: not found", path)
			}
			var f fixtureSecret
			if err := decode(raw, &f); err != nil {
				return nil, err
			}
			return &Secret{LeaseID: f.LeaseID, LeaseDuration: f.LeaseDuration, Renewable: f.Renewable, Data: f.Data}, nil
		},
		"env": func(name string) (string, error) { return s.Env[name], nil },
		"file": func(path string) (string, error) {
			if c, ok := s.Files[path]; ok {
				return c, nil
			}
			return "", fmt.Errorf("file %q: not found", path)
		},
		"base64Encode":    func(v string) (string, error) { return base64.StdEncoding.EncodeToString([]byte(v)), nil },
		"base64Decode":    decoder(base64.StdEncoding, "base64Decode"),
		"base64URLEncode": func(v string) (string, error) { return base64.URLEncoding.EncodeToString([]byte(v)), nil },
		"base64URLDecode": decoder(base64.URLEncoding, "base64URLDecode"),
		"toJSON": func(i interface{}) (string, error) {
			b, err := json.Marshal(i)
			if err != nil {
				return "", fmt.Errorf("toJSON: %s", err)
			}
			return string(bytes.TrimSpace(b)), nil
		},
		"toJSONPretty": func(m map[string]interface{}) (string, error) {
			b, err := json.MarshalIndent(m, "", "  ")
			if err != nil {
				return "", fmt.Errorf("toJSONPretty: %s", err)
			}
			return string(bytes.TrimSpace(b)), nil
		},
		"toYAML": func(m map[string]interface{}) (string, error) {
			b, err := yaml.Marshal(m)
			if err != nil {
				return "", fmt.Errorf("toYAML: %s", err)
			}
			return strings.TrimSpace(string(b)), nil
		},
		"toLower":    func(v string) (string, error) { return strings.ToLower(v), nil },
		"toUpper":    func(v string) (string, error) { return strings.ToUpper(v), nil },
		"trimSpace":  func(v string) (string, error) { return strings.TrimSpace(v), nil },
		"split":      func(sep, v string) ([]string, error) { return strings.Split(v, sep), nil },
		"join":       func(sep string, a []string) (string, error) { return strings.Join(a, sep), nil },
		"contains":   func(v, l interface{}) (bool, error) { return in(l, v) },
		"replaceAll": func(f, t, v string) (string, error) { return strings.ReplaceAll(v, f, t), nil },
		"parseJSON": func(v string) (interface{}, error) {
			if v == "" {
				return map[string]interface{}{}, nil
			}
			var data interface{}
			if err := json.Unmarshal([]byte(v), &data); err != nil {
				return nil, fmt.Errorf("parseJSON: %s", err)
			}
			return data, nil
		},
	}
}

func run(s *suite, c testCase) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	t := template.New("t").Funcs(funcs(s))
	if c.MissingKey {
		t = t.Option("missingkey=error")
	}
	t, err = t.Parse(c.Tmpl)
	if err != nil {
		return "", err
	}
	var data interface{}
	if c.Data != nil {
		if err := decode(*c.Data, &data); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

func main() {
	var s suite
	raw, err := os.ReadFile("/dev/stdin")
	if err == nil {
		err = json.Unmarshal(raw, &s)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	results := []result{}
	for _, c := range s.Cases {
		out, err := run(&s, c)
		r := result{Name: c.Name}
		if err != nil {
			msg := strings.ReplaceAll(err.Error(), "main.Secret", "dependency.Secret")
			r.Err = &msg
		} else {
			r.Out = &out
		}
		results = append(results, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(results); err != nil {
		os.Exit(2)
	}
}
