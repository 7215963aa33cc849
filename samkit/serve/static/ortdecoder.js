// In-browser prompt decoding with onnxruntime-web: the server sends the image embedding
// (float32 .npy) once per image and the decoder ONNX once; every prompt then runs locally.
// onnxruntime-web is loaded from /ort/ (the server's ort_dir= option).
"use strict";

const OrtDecoder = {
  sessions: {}, // "single" | "multi" -> InferenceSession
  embeddings: new Map(), // image id -> {tensor, height, width}

  async load(kind = "single") {
    if (this.sessions[kind]) return this.sessions[kind];
    if (!window.ort) {
      await new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = "ort/ort.min.js";
        s.onload = resolve;
        s.onerror = () => reject(new Error("onnxruntime-web not served (start with ort_dir=)"));
        document.head.appendChild(s);
      });
      ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
      // wasm threads need cross-origin isolation (the server sends COOP/COEP headers)
      ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    }
    // one mask (token 0) or the three multimask outputs: the graph upsamples only those
    const model = await (await fetch(`api/decoder.onnx?masks=${kind}`)).arrayBuffer();
    this.sessions[kind] = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
    return this.sessions[kind];
  },

  // parse a .npy (version 1/2, little-endian float32, C order)
  parseNpy(buf) {
    const bytes = new Uint8Array(buf);
    const major = bytes[6];
    const view = new DataView(buf);
    const hlen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
    const start = major === 1 ? 10 : 12;
    const header = new TextDecoder().decode(bytes.slice(start, start + hlen));
    if (!header.includes("<f4")) throw new Error("embedding is not float32");
    const shape = header.match(/\(([^)]*)\)/)[1].split(",").filter((s) => s.trim()).map(Number);
    return { shape, data: new Float32Array(buf.slice(start + hlen)) };
  },

  async embedding(imageId) {
    if (this.embeddings.has(imageId)) return this.embeddings.get(imageId);
    const r = await fetch(`api/images/${imageId}/embedding.npy`);
    if (!r.ok) throw new Error((await r.json()).detail);
    const npy = this.parseNpy(await r.arrayBuffer());
    const entry = {
      tensor: new ort.Tensor("float32", npy.data, npy.shape),
      height: Number(r.headers.get("X-Image-Height")),
      width: Number(r.headers.get("X-Image-Width")),
      lowRes: 4 * npy.shape[2],
    };
    this.embeddings.clear(); // one image at a time (a ViT embedding is 4 MB)
    this.embeddings.set(imageId, entry);
    return entry;
  },

  // prompts in image pixels -> {masks: [mask (rle.js: its box and pixels)], scores: [...]}
  async decode(imageId, imageSize, prompts, multimask) {
    const session = await this.load(multimask ? "multi" : "single");
    const emb = await this.embedding(imageId);
    const { height: h, width: w } = emb;
    const scale = imageSize / Math.max(h, w);
    const coords = [], labels = [];
    prompts.points.forEach((p, i) => { coords.push(p[0] * scale, p[1] * scale); labels.push(prompts.labels[i]); });
    if (prompts.box) {
      const b = prompts.box;
      coords.push(b[0] * scale, b[1] * scale, b[2] * scale, b[3] * scale);
      labels.push(2, 3);
    } else {
      coords.push(0, 0);
      labels.push(-1);
    }
    const n = labels.length;
    const s = emb.lowRes;
    const feeds = {
      image_embeddings: emb.tensor,
      point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, n, 2]),
      point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, n]),
      mask_input: new ort.Tensor("float32", new Float32Array(s * s), [1, 1, s, s]),
      has_mask_input: new ort.Tensor("float32", new Float32Array([0]), [1]),
      orig_im_size: new ort.Tensor("float32", new Float32Array([h, w]), [2]),
    };
    const out = await session.run(feeds);
    const logits = out.masks.data, iou = out.iou_predictions.data;
    const pick = multimask ? [0, 1, 2] : [0];
    const masks = [], scores = [];
    for (const k of pick) {
      masks.push(Rle.fromLogits(w, h, logits, k * h * w)); // the mask's box only (rle.js)
      scores.push(iou[k]);
    }
    return { masks, scores };
  },
};
window.OrtDecoder = OrtDecoder;
