// Masks of the page and their wire formats (see samkit/serve/masks.py).
// A mask is {width, height, x, y, w, h, data}: the image is width x height pixels, the mask's
// bounding box is (x, y, w, h) and data = Uint8Array(w * h), row-major inside the box, 1 = set
// (an empty mask has w = h = 0). Only the box is stored, decoded and drawn.
// Wire formats: compressed COCO RLE {size: [H, W], counts} (column-major runs of the image) and
// the box RLE {box: [x, y, w, h], counts} (row-major runs inside the box), same counts alphabet.
"use strict";

const Rle = {
  // counts string -> run lengths (Int32Array), the first one a run of zeros
  countsFromString(s) {
    const counts = new Int32Array(s.length); // at most one run per character
    let n = 0, p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = 1, c = 0;
      while (more) {
        c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20;
        p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (n > 2) x += counts[n - 2];
      counts[n++] = x;
    }
    return counts.subarray(0, n);
  },

  stringFromCounts(counts) {
    const parts = [];
    for (let i = 0; i < counts.length; i++) {
      let x = counts[i];
      if (i > 2) x -= counts[i - 2];
      let more = 1;
      while (more) {
        let c = x & 0x1f;
        x >>= 5;
        more = (c & 0x10) ? x !== -1 : x !== 0;
        if (more) c |= 0x20;
        parts.push(c + 48);
      }
    }
    let s = "";
    for (let i = 0; i < parts.length; i += 8192) s += String.fromCharCode.apply(null, parts.slice(i, i + 8192));
    return s;
  },

  empty(width, height) { return { width, height, x: 0, y: 0, w: 0, h: 0, data: new Uint8Array(0) }; },

  // box RLE of a width x height image -> mask; its runs are kept for drawing (mask.runs)
  decodeBox(b, width, height) {
    const [x, y, w, h] = b.box;
    if (!w || !h) return Rle.empty(width, height);
    if (x < 0 || y < 0 || x + w > width || y + h > height) throw new Error(`mask box ${b.box} outside the ${width} x ${height} image`);
    const data = new Uint8Array(w * h);
    const runs = Rle.countsFromString(b.counts);
    let k = 0;
    for (let i = 0; i < runs.length; i++) {
      if (i & 1) data.fill(1, k, k + runs[i]);
      k += runs[i];
    }
    if (k !== w * h) throw new Error(`box RLE has ${k} pixels, its box ${w * h}`);
    return { width, height, x, y, w, h, data, runs };
  },

  // compressed COCO RLE -> mask (two passes: the box of the set pixels, then the pixels)
  decode(rle) {
    const [H, W] = rle.size;
    const counts = Rle.countsFromString(rle.counts);
    let x0 = W, y0 = H, x1 = -1, y1 = -1, k = 0;
    for (let i = 0; i < counts.length; i++) {
      const n = counts[i];
      if ((i & 1) && n > 0) {
        const c0 = Math.floor(k / H), c1 = Math.floor((k + n - 1) / H);
        if (c0 < x0) x0 = c0;
        if (c1 > x1) x1 = c1;
        if (c1 > c0) { y0 = 0; y1 = H - 1; } // the run wraps: from row 0 to row H - 1
        else { y0 = Math.min(y0, k - c0 * H); y1 = Math.max(y1, k + n - 1 - c0 * H); }
      }
      k += n;
    }
    if (x1 < 0) return Rle.empty(W, H);
    const w = x1 - x0 + 1, h = y1 - y0 + 1, data = new Uint8Array(w * h);
    k = 0;
    for (let i = 0; i < counts.length; i++) {
      const n = counts[i];
      if ((i & 1) && n > 0) {
        let c = Math.floor(k / H), r = k - c * H;
        for (let j = 0; j < n; j++) {
          data[(r - y0) * w + (c - x0)] = 1;
          if (++r === H) { r = 0; c++; }
        }
      }
      k += n;
    }
    return { width: W, height: H, x: x0, y: y0, w, h, data };
  },

  // mask -> compressed COCO RLE of the whole image (what the API stores)
  encode(m) {
    const { width: W, height: H, x, y, w, h, data } = m;
    const counts = [];
    let prev = 0, run = x * H; // the columns left of the box
    const zeros = (n) => {
      if (n <= 0) return;
      if (prev) { counts.push(run); run = 0; prev = 0; }
      run += n;
    };
    for (let c = 0; c < w; c++) {
      zeros(y);
      for (let r = 0; r < h; r++) {
        const v = data[r * w + c] ? 1 : 0;
        if (v !== prev) { counts.push(run); run = 0; prev = v; }
        run++;
      }
      zeros(H - y - h);
    }
    zeros((W - x - w) * H);
    counts.push(run);
    return { size: [H, W], counts: Rle.stringFromCounts(counts) };
  },

  // row-major H x W logits (at offset off) -> the mask of logits > 0
  fromLogits(W, H, logits, off = 0) {
    let x0 = W, x1 = -1, y0 = -1, y1 = -1;
    for (let r = 0; r < H; r++) {
      const row = off + r * W;
      let a = -1, b = -1;
      for (let c = 0; c < W; c++) if (logits[row + c] > 0) { if (a < 0) a = c; b = c; }
      if (a >= 0) { if (a < x0) x0 = a; if (b > x1) x1 = b; if (y0 < 0) y0 = r; y1 = r; }
    }
    if (x1 < 0) return Rle.empty(W, H);
    const w = x1 - x0 + 1, h = y1 - y0 + 1, data = new Uint8Array(w * h);
    for (let r = 0; r < h; r++) {
      const src = off + (y0 + r) * W + x0;
      for (let c = 0; c < w; c++) data[r * w + c] = logits[src + c] > 0 ? 1 : 0;
    }
    return { width: W, height: H, x: x0, y: y0, w, h, data };
  },
};
window.Rle = Rle;
