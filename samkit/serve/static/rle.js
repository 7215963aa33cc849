// Compressed COCO RLE <-> binary masks (pycocotools' string format), for the page.
// A mask is {width, height, data: Uint8Array(width * height), row-major, 1 = set}.
"use strict";

const Rle = {
  // counts string -> run lengths (column-major, starting with a run of zeros)
  countsFromString(s) {
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = 1, c = 0;
      while (more) {
        c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20;
        p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  },

  stringFromCounts(counts) {
    let s = "";
    for (let i = 0; i < counts.length; i++) {
      let x = counts[i];
      if (i > 2) x -= counts[i - 2];
      let more = 1;
      while (more) {
        let c = x & 0x1f;
        x >>= 5;
        more = (c & 0x10) ? x !== -1 : x !== 0;
        if (more) c |= 0x20;
        s += String.fromCharCode(c + 48);
      }
    }
    return s;
  },

  decode(rle) {
    const [h, w] = rle.size;
    const data = new Uint8Array(w * h);
    const counts = Rle.countsFromString(rle.counts);
    let k = 0, v = 0;
    for (const n of counts) {
      if (v) {
        for (let j = k; j < k + n; j++) data[(j % h) * w + Math.floor(j / h)] = 1;
      }
      k += n;
      v ^= 1;
    }
    return { width: w, height: h, data };
  },

  encode(mask) {
    const { width: w, height: h, data } = mask;
    const counts = [];
    let prev = 0, run = 0;
    for (let x = 0; x < w; x++) {
      for (let y = 0; y < h; y++) {
        const v = data[y * w + x];
        if (v !== prev) { counts.push(run); run = 0; prev = v; }
        run++;
      }
    }
    counts.push(run);
    return { size: [h, w], counts: Rle.stringFromCounts(counts) };
  },
};
window.Rle = Rle;
