"""harmspot.maps: folium maps, static figures and exports. Consumes geo.result.AnalysisResult only."""
