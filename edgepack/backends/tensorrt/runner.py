"""The host-proxy runner: the bundle's TensorRT-ready ONNX (fp32; fp16 with weights and activations cast to
float16; INT8 the Q/DQ network) run by ONNX Runtime on the build host's CPU. It is a proxy for what TensorRT will
compute — same graph, same quantization scales — never the engine; its facts say so and the report labels its
parity ``host-proxy``. The engine runs on the device through ``device.py``."""

from __future__ import annotations

from edgepack.backends.base import Runner


class HostProxyRunner(Runner):
    def activate_impl(self) -> None:
        import onnx
        import onnxruntime as ort

        rt = self.artifact.runtime
        path = self.bundle_dir / rt["proxy_model"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        if rt.get("proxy_fp16"):
            from onnxruntime.transformers.float16 import convert_float_to_float16

            from edgepack.onnxgraph import unique_initializer_names

            model = onnx.load(str(path))
            unique_initializer_names(model)  # If branches reusing outer initializer names trip the converter's assert
            model = convert_float_to_float16(model, keep_io_types=True)
            # basic only: at "all" ORT's CPU session folds the fp16 casts back into fp32 constants
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            self._sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        else:
            self._sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self._sess.get_outputs()]
        self.facts = {"runtime": f"onnxruntime {ort.__version__} (host-proxy for TensorRT {rt['tensorrt']})",
                      "where": "host-proxy", "model": rt["proxy_model"], "fp16": bool(rt.get("proxy_fp16")),
                      "threads": self.threads}

    def infer_impl(self, feed):
        out = dict(zip(self._names, self._sess.run(self._names, feed)))
        return {k: v.astype("float32") if v.dtype == "float16" else v for k, v in out.items()}

    def deactivate_impl(self) -> None:
        self._sess = None
