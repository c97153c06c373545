// otelcol-weft: a minimal OpenTelemetry Collector distribution used as a real
// peer in weft's tests and benchmarks.
//
// It links only the components weft's tests need:
//
//	receivers:  otlp
//	processors: batch, redaction, transform
//	exporters:  otlp, otlphttp, debug, file
//
// Config sources: file: (default scheme for bare paths), env:, yaml:.
// Usage: otelcol-weft --config=PATH [validate|components|print-config]
package main

import (
	"fmt"
	"os"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/debugexporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/exporter/otlphttpexporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/redactionprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/transformprocessor"
)

// version is the collector release whose modules this distribution links.
const version = "0.161.0-weft"

// components returns the factories of every component linked into this binary.
func components() (otelcol.Factories, error) {
	var (
		f   otelcol.Factories
		err error
	)

	f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](
		otlpreceiver.NewFactory(),
	)
	if err != nil {
		return f, fmt.Errorf("receivers: %w", err)
	}

	f.Processors, err = otelcol.MakeFactoryMap[processor.Factory](
		batchprocessor.NewFactory(),
		redactionprocessor.NewFactory(),
		transformprocessor.NewFactory(),
	)
	if err != nil {
		return f, fmt.Errorf("processors: %w", err)
	}

	f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](
		otlpexporter.NewFactory(),
		otlphttpexporter.NewFactory(),
		debugexporter.NewFactory(),
		fileexporter.NewFactory(),
	)
	if err != nil {
		return f, fmt.Errorf("exporters: %w", err)
	}

	// No extensions or connectors: empty maps keep the config unmarshaler happy.
	f.Extensions = nil
	f.Connectors = nil

	f.Telemetry = otelconftelemetry.NewFactory()
	return f, nil
}

func main() {
	settings := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "otelcol-weft",
			Description: "Minimal OpenTelemetry Collector used as a test peer for weft",
			Version:     version,
		},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					fileprovider.NewFactory(),
					envprovider.NewFactory(),
					yamlprovider.NewFactory(),
				},
				DefaultScheme: "env",
			},
		},
	}

	if err := otelcol.NewCommand(settings).Execute(); err != nil {
		// cobra already printed the error; keep a distinct exit code.
		os.Exit(1)
	}
}
