/* Flashgate proof-of-work worker. No deps, no network.
 *
 * Finds a counter c such that SHA-256(challenge || c as 8 bytes big-endian) starts with
 * `difficulty` zero bits. The challenge is ASCII (base64url). Each worker owns the counters
 * whose high 32 bits are `hi`, so several workers never repeat each other's work.
 *
 * In:  { challenge: string, difficulty: number, hi: number }
 * Out: { type: 'progress', done: n }          every 65536 tries
 *      { type: 'found', counter: n, done: n } counter = hi * 2^32 + lo (exact below 2^53)
 *      { type: 'exhausted', done: n }         all 2^32 counters of `hi` tried (practically never)
 *
 * The blocks of the challenge that don't contain the counter are hashed once (the "midstate");
 * each try then costs one or two SHA-256 compressions.
 */
(function () {
  'use strict';

  var K = new Int32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ]);
  var IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
  var W = new Int32Array(64);

  // One compression of the 16 words at M[off..off+16] into H (in place).
  function compress(H, M, off) {
    var a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    var i, x, y, t1, t2;
    for (i = 0; i < 16; i++) W[i] = M[off + i];
    for (i = 16; i < 64; i++) {
      x = W[i - 15]; y = W[i - 2];
      W[i] = (W[i - 16] + (((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3)) +
        W[i - 7] + (((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10))) | 0;
    }
    for (i = 0; i < 64; i++) {
      t1 = (h + (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) +
        ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
      t2 = ((((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) +
        ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + b) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }

  function ascii(s) {
    var out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
    return out;
  }

  function words(bytes, nWords) {
    var w = new Int32Array(nWords);
    for (var i = 0; i < nWords; i++) {
      w[i] = (bytes[4 * i] << 24) | (bytes[4 * i + 1] << 16) | (bytes[4 * i + 2] << 8) | bytes[4 * i + 3];
    }
    return w;
  }

  // Whether H starts with `bits` zero bits.
  function zeros(H, bits) {
    for (var i = 0; bits > 0; i++) {
      var take = bits > 32 ? 32 : bits;
      if (take === 32 ? H[i] !== 0 : (H[i] >>> (32 - take)) !== 0) return false;
      bits -= take;
    }
    return true;
  }

  // A searcher for one challenge and one `hi`. try_(lo) hashes the counter (hi, lo).
  function searcher(challenge, difficulty, hi) {
    var prefix = ascii(challenge);
    var full = Math.floor(prefix.length / 64);
    var mid = new Int32Array(IV);
    var all = words(prefix, full * 16);
    for (var b = 0; b < full; b++) compress(mid, all, b * 16);
    var t = prefix.length - full * 64;          // challenge bytes in the tail
    var total = prefix.length + 8;              // message length in bytes
    var blocks = t + 8 + 9 <= 64 ? 1 : 2;
    var tail = new Uint8Array(blocks * 64);
    tail.set(prefix.subarray(full * 64), 0);
    tail[t] = (hi >>> 24) & 0xff; tail[t + 1] = (hi >>> 16) & 0xff;
    tail[t + 2] = (hi >>> 8) & 0xff; tail[t + 3] = hi & 0xff;
    tail[t + 8] = 0x80;
    var bitsHi = Math.floor(total / 0x20000000), bitsLo = (total * 8) >>> 0;
    var end = blocks * 64;
    tail[end - 8] = (bitsHi >>> 24) & 0xff; tail[end - 7] = (bitsHi >>> 16) & 0xff;
    tail[end - 6] = (bitsHi >>> 8) & 0xff; tail[end - 5] = bitsHi & 0xff;
    tail[end - 4] = (bitsLo >>> 24) & 0xff; tail[end - 3] = (bitsLo >>> 16) & 0xff;
    tail[end - 2] = (bitsLo >>> 8) & 0xff; tail[end - 1] = bitsLo & 0xff;
    var M = words(tail, blocks * 16);
    var p = t + 4;                              // first byte of `lo`
    var w0 = p >> 2, w1 = Math.min(w0 + 1, blocks * 16 - 1);
    var H = new Int32Array(8);

    function setLo(lo) {
      tail[p] = (lo >>> 24) & 0xff; tail[p + 1] = (lo >>> 16) & 0xff;
      tail[p + 2] = (lo >>> 8) & 0xff; tail[p + 3] = lo & 0xff;
      for (var i = w0; i <= w1; i++) {
        M[i] = (tail[4 * i] << 24) | (tail[4 * i + 1] << 16) | (tail[4 * i + 2] << 8) | tail[4 * i + 3];
      }
    }

    return function try_(lo) {
      setLo(lo);
      H.set(mid);
      compress(H, M, 0);
      if (blocks === 2) compress(H, M, 16);
      return zeros(H, difficulty);
    };
  }

  // Searches lo = 0 .. 2^32-1; calls report(done) every 65536 tries. Returns the counter or -1.
  function search(challenge, difficulty, hi, report) {
    var attempt = searcher(challenge, difficulty, hi);
    for (var lo = 0; lo <= 0xffffffff; lo++) {
      if (attempt(lo)) return hi * 4294967296 + lo;
      if ((lo & 0xffff) === 0xffff && report) report(lo + 1);
    }
    return -1;
  }

  // The hex SHA-256 of an ASCII string (for tests).
  function sha256hex(s) {
    var bytes = ascii(s), n = bytes.length, blocks = Math.ceil((n + 9) / 64);
    var buf = new Uint8Array(blocks * 64);
    buf.set(bytes); buf[n] = 0x80;
    var bits = n * 8, end = blocks * 64;
    buf[end - 4] = (bits >>> 24) & 0xff; buf[end - 3] = (bits >>> 16) & 0xff;
    buf[end - 2] = (bits >>> 8) & 0xff; buf[end - 1] = bits & 0xff;
    buf[end - 5] = Math.floor(bits / 4294967296) & 0xff;
    var M = words(buf, blocks * 16), H = new Int32Array(IV), out = '';
    for (var b = 0; b < blocks; b++) compress(H, M, b * 16);
    for (var i = 0; i < 8; i++) out += ('00000000' + (H[i] >>> 0).toString(16)).slice(-8);
    return out;
  }

  if (typeof module === 'object' && module.exports) {
    module.exports = { search: search, searcher: searcher, sha256hex: sha256hex };
  } else if (typeof self === 'object' && typeof self.postMessage === 'function') {
    self.onmessage = function (e) {
      var m = e.data || {};
      if (typeof m.challenge !== 'string' || !(m.difficulty >= 0 && m.difficulty <= 64)) return;
      var hi = (m.hi >>> 0) || 0;
      var found = search(m.challenge, m.difficulty | 0, hi, function (done) {
        self.postMessage({ type: 'progress', done: done });
      });
      if (found >= 0) {
        self.postMessage({ type: 'found', counter: found, done: found - hi * 4294967296 + 1 });
      } else {
        self.postMessage({ type: 'exhausted', done: 4294967296 });
      }
    };
  }
})();
