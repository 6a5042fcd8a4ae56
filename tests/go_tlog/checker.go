// Command checker reads a Credence registry's transparency log as C2SP tiles
// over HTTPS and checks it with Go's reference packages, golang.org/x/mod's
// sumdb/note and sumdb/tlog (tests/test_go_tlog_interop.py builds and runs it).
//
//	checker -url https://127.0.0.1:PORT -ca ca.pem -vkey VKEY [-old FILE] [-prove 0,5,...]
//
// It verifies the checkpoint with note.Open under the log's vkey, rebuilds
// the tree from the entry bundles alone, requires its root to be the
// checkpoint's, requires every tile (every level, partial ones too) to equal
// the tile computed from that tree (x/mod's TileHashReader does not check every
// tile it returns against its parent), then proves inclusion with
// tlog.ProveRecord/CheckRecord and consistency from the -old checkpoint with
// tlog.ProveTree/CheckTree, both through x/mod's TileHashReader over HTTPS.
// Exit status 0 and an "ok" line when everything verifies; 1 and a "FAIL"
// line naming what did not.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

type fetcher struct {
	base   string
	client *http.Client
	count  int
}

func (f *fetcher) get(path string) ([]byte, error) {
	f.count++
	resp, err := f.client.Get(f.base + "/" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /%s: %s", path, resp.Status)
	}
	return body, nil
}

// c2spPath is the tlog-tiles path of a tile: x/mod's sumdb path without the
// height, and "entries" for its "data" tiles.
func c2spPath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", height))
	if strings.HasPrefix(p, "data/") {
		return "tile/entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

// tileReader serves x/mod's TileHashReader from the registry's tile URLs.
type tileReader struct{ f *fetcher }

func (r tileReader) Height() int { return height }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := r.f.get(c2spPath(t))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// treeTiles lists the tiles of a tree of size leaves: each level's full
// tiles and its partial right edge. (x/mod's NewTiles also lists every
// narrower partial tile published on the way.)
func treeTiles(size int64) []tlog.Tile {
	var tiles []tlog.Tile
	for level := 0; size>>(height*level) > 0; level++ {
		count := size >> (height * level)
		for n := int64(0); n < count>>height; n++ {
			tiles = append(tiles, tlog.Tile{H: height, L: level, N: n, W: 1 << height})
		}
		if w := int(count & (1<<height - 1)); w > 0 {
			tiles = append(tiles, tlog.Tile{H: height, L: level, N: count >> height, W: w})
		}
	}
	return tiles
}

type checkpoint struct {
	size int64
	root tlog.Hash
}

func openCheckpoint(msg []byte, verifier note.Verifier) (checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return checkpoint{}, fmt.Errorf("note.Open: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != verifier.Name() {
		return checkpoint{}, fmt.Errorf("checkpoint origin %q is not %q", lines[0], verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return checkpoint{}, fmt.Errorf("checkpoint size %q is not a decimal", lines[1])
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return checkpoint{}, fmt.Errorf("checkpoint root %q is not a base64 hash", lines[2])
	}
	var root tlog.Hash
	copy(root[:], raw)
	return checkpoint{size, root}, nil
}

func decodeBundle(data []byte) ([][]byte, error) {
	var entries [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, errors.New("bundle ends inside a length")
		}
		size := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+size {
			return nil, errors.New("bundle entry cut short")
		}
		entries = append(entries, data[2:2+size])
		data = data[2+size:]
	}
	return entries, nil
}

func check(url, caFile, vkey, oldFile, prove string) (string, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return "", fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	f := &fetcher{base: strings.TrimSuffix(url, "/"), client: &http.Client{Transport: transport, Timeout: 60 * time.Second}}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return "", fmt.Errorf("note.NewVerifier: %v", err)
	}
	msg, err := f.get("checkpoint")
	if err != nil {
		return "", err
	}
	head, err := openCheckpoint(msg, verifier)
	if err != nil {
		return "", err
	}
	if head.size == 0 {
		return "", errors.New("the log is empty: nothing to check")
	}

	// The tree from the entry bundles alone, checked against the level-0 tiles.
	var stored []tlog.Hash
	memory := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, index := range indexes {
			if index < 0 || index >= int64(len(stored)) {
				return nil, fmt.Errorf("stored hash %d is not computed", index)
			}
			out[i] = stored[index]
		}
		return out, nil
	})
	var leaves []tlog.Hash
	tiles := treeTiles(head.size)
	for _, t := range tiles {
		if t.L != 0 {
			continue
		}
		data := t
		data.L = -1
		bundle, err := f.get(c2spPath(data))
		if err != nil {
			return "", err
		}
		entries, err := decodeBundle(bundle)
		if err != nil || len(entries) != t.W {
			return "", fmt.Errorf("entry bundle %s: %d entries, %v", c2spPath(data), len(entries), err)
		}
		for _, entry := range entries {
			hashes, err := tlog.StoredHashes(int64(len(leaves)), entry, memory)
			if err != nil {
				return "", err
			}
			stored = append(stored, hashes...)
			leaves = append(leaves, tlog.RecordHash(entry))
		}
	}
	root, err := tlog.TreeHash(head.size, memory)
	if err != nil {
		return "", err
	}
	if root != head.root {
		return "", fmt.Errorf("the tree rebuilt from the entry bundles has root %v, the checkpoint says %v", root, head.root)
	}
	// Every tile, at every level, must be the one the checked tree has.
	for _, t := range tiles {
		served, err := f.get(c2spPath(t))
		if err != nil {
			return "", err
		}
		want, err := tlog.ReadTileData(t, memory)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(served, want) {
			return "", fmt.Errorf("tile %s does not match the checkpoint's tree", c2spPath(t))
		}
	}

	// Proofs through x/mod's own tile reader, over HTTPS.
	reader := tlog.TileHashReader(tlog.Tree{N: head.size, Hash: head.root}, tileReader{f})
	indexes := []int64{0, head.size - 1}
	if prove != "" {
		indexes = nil
		for _, field := range strings.Split(prove, ",") {
			index, err := strconv.ParseInt(field, 10, 64)
			if err != nil || index < 0 || index >= head.size {
				return "", fmt.Errorf("-prove index %q is not in 0..%d", field, head.size-1)
			}
			indexes = append(indexes, index)
		}
	}
	for _, index := range indexes {
		proof, err := tlog.ProveRecord(head.size, index, reader)
		if err != nil {
			return "", fmt.Errorf("ProveRecord(%d): %v", index, err)
		}
		if err := tlog.CheckRecord(proof, head.size, head.root, index, leaves[index]); err != nil {
			return "", fmt.Errorf("CheckRecord(%d): %v", index, err)
		}
	}
	consistency := "none"
	if oldFile != "" {
		oldMsg, err := os.ReadFile(oldFile)
		if err != nil {
			return "", err
		}
		old, err := openCheckpoint(oldMsg, verifier)
		if err != nil {
			return "", fmt.Errorf("old checkpoint: %v", err)
		}
		if old.size > head.size {
			return "", fmt.Errorf("the log shrank from %d to %d", old.size, head.size)
		}
		proof, err := tlog.ProveTree(head.size, old.size, reader)
		if err != nil {
			return "", fmt.Errorf("ProveTree(%d, %d): %v", head.size, old.size, err)
		}
		if err := tlog.CheckTree(proof, head.size, head.root, old.size, old.root); err != nil {
			return "", fmt.Errorf("CheckTree(%d, %d): %v", head.size, old.size, err)
		}
		consistency = fmt.Sprintf("%d->%d", old.size, head.size)
	}
	return fmt.Sprintf("ok size=%d root=%v tiles=%d inclusion=%d consistency=%s fetches=%d",
		head.size, head.root, len(tiles), len(indexes), consistency, f.count), nil
}

func main() {
	url := flag.String("url", "", "the registry's HTTP side, https://host:port")
	caFile := flag.String("ca", "", "PEM file of the CA that issued its certificate")
	vkey := flag.String("vkey", "", "the log's note verifier key")
	oldFile := flag.String("old", "", "an older checkpoint to prove consistency from")
	prove := flag.String("prove", "", "comma-separated leaf indexes to prove (default: first and last)")
	flag.Parse()
	summary, err := check(*url, *caFile, *vkey, *oldFile, *prove)
	if err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
	fmt.Println(summary)
}
