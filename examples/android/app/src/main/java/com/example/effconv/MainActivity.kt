package com.example.effconv

import android.os.Bundle
import android.widget.Button
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import androidx.lifecycle.lifecycleScope
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.Environment
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.json.JSONObject
import kotlin.random.Random

/**
 * Loads assets/model.tflite (exported by `keras-effconv export`) with the LiteRT
 * GPU accelerator, falls back to the CPU when the GPU cannot compile it, and shows
 * the median latency of batch-1 inference.
 */
class MainActivity : AppCompatActivity() {

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        val result = findViewById<TextView>(R.id.result)
        findViewById<Button>(R.id.run).setOnClickListener { button ->
            button.isEnabled = false
            result.text = "Running..."
            lifecycleScope.launch {
                result.text = withContext(Dispatchers.Default) {
                    try {
                        benchmark()
                    } catch (e: Exception) {
                        "Failed: ${e.message}"
                    }
                }
                button.isEnabled = true
            }
        }
    }

    private fun benchmark(): String {
        // model.json is written next to model.tflite by examples/export_for_android.py.
        val meta = JSONObject(assets.open("model.json").bufferedReader().use { it.readText() })
        val shape = meta.getJSONArray("input_shape")
        val inputSize = (0 until shape.length()).fold(1) { n, i -> n * shape.getInt(i) }

        val env = Environment.create()
        var backend = "GPU"
        // GPU only: compilation fails if any op cannot run on the GPU, so a
        // model that would silently run partly on the CPU is reported as such.
        val model = try {
            CompiledModel.create(assets, MODEL, CompiledModel.Options(Accelerator.GPU), env)
        } catch (e: Exception) {
            backend = "CPU (GPU unavailable: ${e.message})"
            CompiledModel.create(assets, MODEL, CompiledModel.Options(Accelerator.CPU), env)
        }
        try {
            val inputs = model.createInputBuffers()
            val outputs = model.createOutputBuffers()
            val random = Random(0)
            inputs[0].writeFloat(FloatArray(inputSize) { random.nextFloat() })
            repeat(WARMUP) { model.run(inputs, outputs) }
            val millis = DoubleArray(RUNS) {
                val start = System.nanoTime()
                model.run(inputs, outputs)
                (System.nanoTime() - start) / 1e6
            }.sorted()
            val scores = outputs[0].readFloat()
            val top1 = scores.indices.maxByOrNull { scores[it] } ?: -1
            inputs.forEach { it.close() }
            outputs.forEach { it.close() }
            return buildString {
                appendLine("model: $MODEL ${meta.optString("name")}")
                appendLine("input: ${shape}")
                appendLine("backend: $backend")
                appendLine("median latency: %.2f ms (min %.2f ms, %d runs)".format(millis[RUNS / 2], millis[0], RUNS))
                append("top-1 class on a random input: $top1")
            }
        } finally {
            model.close()
            env.close()
        }
    }

    companion object {
        private const val MODEL = "model.tflite"
        private const val WARMUP = 5
        private const val RUNS = 30
    }
}
