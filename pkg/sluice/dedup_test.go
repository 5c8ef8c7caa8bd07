package sluice

import (
	"strings"
	"testing"
)

func TestKeyOf(t *testing.T) {
	digest := "mIs9xtq6tAe7hGPraNTRCQ"
	for _, tc := range []struct{ id, key, tenant string }{
		{DedupID("order-1", digest), "order-1", ""},
		{DedupID("a:b/c~d", digest), "a:b/c~d", ""},
		{TenantDedupID("acme", "order-1", digest), "order-1", "acme"},
		{TenantDedupID("acme-eu_2", "a:b/c~d=@+", digest), "a:b/c~d=@+", "acme-eu_2"},
		{TenantDedupID("", "order-1", digest), "order-1", ""},
		{"order-1", "order-1", ""},                             // stored before digests
		{"a.b", "a.b", ""},                                     // published by other means
		{"acme.order-1", "acme.order-1", ""},                   // no digest: not a gateway's id
		{"redrive.billing.7.123", "redrive.billing.7.123", ""}, // not a digest
		// A redrive's id with its digest: "billing.7.123" is no key.
		{DedupID("redrive.billing.7.123", digest), "redrive.billing.7.123", ""},
		{"Acme.k." + digest, "Acme.k", ""}, // not a tenant name
		{"-a.k." + digest, "-a.k", ""},
		{"a--b.k." + digest, "a--b.k", ""},
		{".k." + digest, ".k", ""},
		{"a.." + digest, "a.", ""},
		{"x." + digest + "x", "x." + digest + "x", ""},
		{"", "", ""},
	} {
		if got := KeyOf(tc.id); got != tc.key {
			t.Errorf("KeyOf(%q) = %q, want %q", tc.id, got, tc.key)
		}
		if got := TenantOf(tc.id); got != tc.tenant {
			t.Errorf("TenantOf(%q) = %q, want %q", tc.id, got, tc.tenant)
		}
	}
}

// TestTenantDedupIDsNeverCollide: ids of different tenants, keys and
// open mode are different ids, and each gives its key and tenant back,
// for names and keys made of the characters around the separator.
func TestTenantDedupIDsNeverCollide(t *testing.T) {
	digest := "mIs9xtq6tAe7hGPraNTRCQ"
	tenants := []string{"", "a", "b", "a-b", "a_b", "ab", "a1", "k"}
	keys := []string{"a", "b", "k", "a-b", "b-k", "a_b", "ab", "a:b", "a/b", "k~", "=", "@", "+", "a-b-k", "acme"}
	seen := map[string][2]string{}
	for _, tn := range tenants {
		if tn != "" && ValidateName(tn) != nil {
			t.Fatalf("bad test tenant %q", tn)
		}
		for _, k := range keys {
			id := TenantDedupID(tn, k, digest)
			if prev, dup := seen[id]; dup {
				t.Fatalf("tenant %q key %q and tenant %q key %q share id %q", tn, k, prev[0], prev[1], id)
			}
			seen[id] = [2]string{tn, k}
			if KeyOf(id) != k || TenantOf(id) != tn {
				t.Errorf("%q: key %q tenant %q, want %q %q", id, KeyOf(id), TenantOf(id), k, tn)
			}
		}
	}
}

// FuzzTenantDedupID: for any valid tenant name and key, the id gives both
// back.
func FuzzTenantDedupID(f *testing.F) {
	f.Add("acme", "order-1")
	f.Add("a-b", "c_d")
	f.Fuzz(func(t *testing.T, tn, key string) {
		if ValidateName(tn) != nil || key == "" || strings.ContainsAny(key, ". \t\r\n") {
			t.Skip()
		}
		id := TenantDedupID(tn, key, "mIs9xtq6tAe7hGPraNTRCQ")
		if KeyOf(id) != key || TenantOf(id) != tn {
			t.Fatalf("%q: key %q tenant %q", id, KeyOf(id), TenantOf(id))
		}
	})
}
